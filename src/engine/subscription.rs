//! Which records a plugin gets: the record types it includes and excludes.
//!
//! The admin's plugins.d file and the plugin's own handshake can both name
//! types; the admin has the last word. A plugin is given the types both
//! include (either side's empty list meaning "all") minus the types either
//! side excludes. The check runs for every record and every plugin, so types
//! below 4096 (all the types the kernel and auditd define) are looked up in a
//! bitmap.

const BITS: usize = 4096;

/// A compiled include/exclude filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    bits: Box<[u64; BITS / 64]>,
    /// Large type numbers (`UNKNOWN[n]` beyond the bitmap): (type, wanted).
    rest: Vec<(u32, bool)>,
    /// Whether types not listed anywhere are wanted.
    default: bool,
}

impl Filter {
    /// Every type.
    pub fn all() -> Filter {
        Filter::new(&[], &[])
    }

    /// A filter that passes `include` (all types when empty) minus `exclude`.
    pub fn new(include: &[u32], exclude: &[u32]) -> Filter {
        let default = include.is_empty();
        let fill = if default { u64::MAX } else { 0 };
        let mut f = Filter {
            bits: Box::new([fill; BITS / 64]),
            rest: Vec::new(),
            default,
        };
        for &t in include {
            f.set(t, true);
        }
        for &t in exclude {
            f.set(t, false);
        }
        f
    }

    /// The filter of a plugin whose admin configured `admin_*` and which
    /// asked for `plugin_*` in its handshake.
    pub fn combine(
        admin_include: &[u32],
        admin_exclude: &[u32],
        plugin_include: &[u32],
        plugin_exclude: &[u32],
    ) -> Filter {
        let include: Vec<u32> = match (admin_include.is_empty(), plugin_include.is_empty()) {
            (true, _) => plugin_include.to_vec(),
            (false, true) => admin_include.to_vec(),
            (false, false) => {
                let both: Vec<u32> = admin_include
                    .iter()
                    .copied()
                    .filter(|t| plugin_include.contains(t))
                    .collect();
                if both.is_empty() {
                    // Nothing in common: the plugin gets nothing rather than
                    // everything. A type number no record has keeps the
                    // include list non-empty.
                    vec![u32::MAX]
                } else {
                    both
                }
            }
        };
        let mut exclude = admin_exclude.to_vec();
        exclude.extend_from_slice(plugin_exclude);
        Filter::new(&include, &exclude)
    }

    fn set(&mut self, t: u32, wanted: bool) {
        if (t as usize) < BITS {
            let (w, b) = (t as usize / 64, t as usize % 64);
            if wanted {
                self.bits[w] |= 1 << b;
            } else {
                self.bits[w] &= !(1 << b);
            }
        } else if let Some(r) = self.rest.iter_mut().find(|r| r.0 == t) {
            r.1 = wanted;
        } else {
            self.rest.push((t, wanted));
        }
    }

    /// Whether records of type `t` pass.
    #[inline]
    pub fn wants(&self, t: u32) -> bool {
        if (t as usize) < BITS {
            self.bits[t as usize / 64] & (1 << (t % 64)) != 0
        } else {
            self.rest
                .iter()
                .find(|r| r.0 == t)
                .map_or(self.default, |r| r.1)
        }
    }

    /// Whether every type passes.
    pub fn is_all(&self) -> bool {
        self.default && self.rest.iter().all(|r| r.1) && self.bits.iter().all(|&w| w == u64::MAX)
    }
}

/// A plugin's effective subscription, compiled for each delivery mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Records mode: the records delivered (included minus excluded).
    pub records: Filter,
    /// Events mode: an event is delivered if one of its records passes.
    pub select: Filter,
    /// Events mode: the records of a delivered event that are kept (all but
    /// the excluded types).
    pub keep: Filter,
}

impl Subscription {
    /// Combines what the admin configured with what the plugin asked for.
    pub fn new(
        admin_include: &[u32],
        admin_exclude: &[u32],
        plugin_include: &[u32],
        plugin_exclude: &[u32],
    ) -> Subscription {
        let records = Filter::combine(admin_include, admin_exclude, plugin_include, plugin_exclude);
        let select = Filter::combine(admin_include, &[], plugin_include, &[]);
        let keep = Filter::combine(&[], admin_exclude, &[], plugin_exclude);
        Subscription {
            records,
            select,
            keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude() {
        let f = Filter::new(&[1400, 1107, 70000], &[1107]);
        assert!(f.wants(1400));
        assert!(!f.wants(1107));
        assert!(!f.wants(1300));
        assert!(f.wants(70000));
        assert!(!f.wants(70001));
        let g = Filter::new(&[], &[1320, 80000]);
        assert!(g.wants(1300));
        assert!(!g.wants(1320));
        assert!(!g.wants(80000));
        assert!(g.wants(80001));
        assert!(Filter::all().is_all());
        assert!(!g.is_all());
    }

    #[test]
    fn admin_and_plugin_combine() {
        // Admin: only AVC and SYSCALL; plugin asks for AVC and USER_AVC.
        let f = Filter::combine(&[1400, 1300], &[], &[1400, 1107], &[]);
        assert!(f.wants(1400));
        assert!(!f.wants(1300));
        assert!(!f.wants(1107));
        // Disjoint lists give nothing, not everything.
        let none = Filter::combine(&[1300], &[], &[1400], &[]);
        assert!(!none.wants(1300) && !none.wants(1400));
        // Either side may exclude.
        let ex = Filter::combine(&[], &[1320], &[], &[1327]);
        assert!(!ex.wants(1320) && !ex.wants(1327) && ex.wants(1300));
    }

    #[test]
    fn events_select_by_include_and_trim_by_exclude() {
        let s = Subscription::new(&[1400], &[1320], &[], &[1327]);
        assert!(s.select.wants(1400) && !s.select.wants(1300));
        assert!(s.keep.wants(1300) && s.keep.wants(1400));
        assert!(!s.keep.wants(1320) && !s.keep.wants(1327));
        assert!(s.records.wants(1400) && !s.records.wants(1300));
    }
}
