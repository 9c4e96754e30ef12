#!/usr/bin/python3
# Parses a metrics exposition read on standard input with the parsers of
# prometheus_client (Debian: python3-prometheus-client), the library
# Prometheus' own Python client uses: argv[1] "text" for the Prometheus text
# format, "openmetrics" for OpenMetrics (strict: # EOF, suffixes, types).
# Prints the families as JSON; a parse error exits non-zero with the reason.
import json
import sys

if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families

families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name,
        "type": f.type,
        "help": f.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
    })
json.dump(families, sys.stdout)
