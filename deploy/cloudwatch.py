"""The CloudWatch side of the deployment, checked without CloudWatch.

deploy/check.py's check_cloudwatch calls validate(). Each problem is one
line naming the file or resource and what is wrong; in order:

1. The CloudWatch agent's configuration, the JSON heredoc of user-data.sh,
   against the agent's own JSON schema: cloudwatch-agent-schema.json,
   translator/config/schema.json of the agent release the template installs
   (origin, commit and MIT licence in cloudwatch-agent-schema.LICENSE). Then
   what the schema cannot say: a metric declaration without source_labels
   or metric_selectors is silently dropped by the agent; every log group is
   the template's log group; retention is the template's, not the agent's;
   the worker's journal and cloud-init-output.log are collected.
2. The Prometheus scrape config, the YAML heredoc: the agent's
   prometheus_config_path, the worker's METRICS_ADDR port, the job the
   declarations match, and the group's name as the AutoScalingGroupName
   label (a Fn::Sub value that check_names ties to the group).
3. Every worker metric that the declarations, the dashboard and the alarms
   name is in deploy/metrics.txt (what the worker exports, kept true by
   crates/vidworker/tests/it/cloudwatch.rs) with a type the agent forwards,
   and the dashboard and alarms use it with a dimension set the agent
   declares (CloudWatch matches the whole set). Every dimension is a label
   the worker or the scrape config sets, every value a label value the
   worker's telemetry code spells.
4. Every AWS metric (AWS/SQS, AWS/AutoScaling, AWS/EC2) is a known metric
   of this template's queues and group (group metrics collected), every
   log query reads the template's log group, every metric-math id is
   defined, and every alarm notifies the alarm topic.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
SCHEMA = DEPLOY / "cloudwatch-agent-schema.json"
METRICS = DEPLOY / "metrics.txt"
WORKER_METRICS_RS = DEPLOY.parent / "crates/worker/src/telemetry/metrics.rs"
TELEMETRY = DEPLOY.parent / "crates/worker/src/telemetry"

# What the agent's Prometheus input forwards on EC2: it drops histograms,
# info and untyped metrics (plugins/inputs/prometheus/metrics_filter.go).
FORWARDED_TYPES = {"counter", "gauge", "summary"}

# The AWS metrics a widget or an alarm may name, per namespace, with the
# dimension that must point at this template's resource, and its type.
AWS_METRICS = {
    "AWS/SQS": ("QueueName", "AWS::SQS::Queue", {
        "ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed", "ApproximateAgeOfOldestMessage", "NumberOfMessagesSent",
        "NumberOfMessagesReceived", "NumberOfMessagesDeleted", "NumberOfEmptyReceives", "SentMessageSize"}),
    "AWS/AutoScaling": ("AutoScalingGroupName", "AWS::AutoScaling::AutoScalingGroup", {
        "GroupMinSize", "GroupMaxSize", "GroupDesiredCapacity", "GroupInServiceInstances",
        "GroupPendingInstances", "GroupStandbyInstances", "GroupTerminatingInstances", "GroupTotalInstances"}),
    "AWS/EC2": ("AutoScalingGroupName", "AWS::AutoScaling::AutoScalingGroup", {
        "CPUUtilization", "CPUCreditBalance", "CPUCreditUsage", "CPUSurplusCreditBalance",
        "CPUSurplusCreditsCharged", "NetworkIn", "NetworkOut", "EBSReadBytes", "EBSWriteBytes",
        "StatusCheckFailed", "StatusCheckFailed_Instance", "StatusCheckFailed_System"}),
}

ALARM_ACTION = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}


class Problems(Exception):
    """Everything found wrong, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__(problems[0])
        self.problems = problems

    def summary(self) -> str:
        more = len(self.problems) - 1
        return self.problems[0] + (f" (and {more} more below)" if more else "")


def validate(tpl: dict, script: str, heredocs: list[tuple[str, str]], sub_vars: dict[str, str]) -> str:
    """Runs every check on the plain template and the user data; returns a
    summary or raises Problems."""
    problems: list[str] = []
    config, placeholders, config_path = agent_config(heredocs, problems)
    if config is None:
        raise Problems(problems)
    problems += schema_errors(config)
    problems += agent_rules(tpl, config, placeholders, sub_vars)
    scrape = scrape_config(script, heredocs, config, sub_vars, problems)
    problems += ctl_command(script, config_path)
    exported = exported_metrics(problems)
    namespace, declared = declarations(config, exported, scrape, problems)
    uses = dashboard_uses(tpl, problems) + alarm_uses(tpl, problems)
    for use in uses:
        problems += check_use(tpl, use, namespace, exported, declared)
    problems += retention(tpl)
    if problems:
        raise Problems(problems)
    return (f"agent config valid against the agent's schema ({SCHEMA.name}); {len(declared)} worker metrics "
            f"declared, all in {METRICS.name}; the dashboard and {len(resources(tpl, 'AWS::CloudWatch::Alarm'))} "
            f"alarms: {len(uses)} metrics and queries, each on a declared metric or this template's resources")


# --- the template ---------------------------------------------------------------

def resources(tpl: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in tpl["Resources"].items() if v.get("Type") == type_}


def reference(value) -> tuple:
    """("Ref", X), ("GetAtt", X, Attr) or ("literal", value), from a template
    value or a "${...}" string of a Fn::Sub."""
    if isinstance(value, dict) and "Ref" in value:
        return ("Ref", value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        target = target.split(".", 1) if isinstance(target, str) else target
        return ("GetAtt", target[0], target[1])
    if isinstance(value, str) and (m := re.fullmatch(r"\$\{([\w:]+)(?:\.(\w+))?\}", value)):
        return ("GetAtt", m.group(1), m.group(2)) if m.group(2) else ("Ref", m.group(1))
    return ("literal", value)


# --- 1. the agent's configuration ---------------------------------------------------

def agent_config(heredocs, problems) -> tuple[dict | None, dict[str, str], str]:
    """(the JSON, placeholder -> shell variable from the opener's sed, the
    file it is written to)."""
    found = [(opener, body) for opener, body in heredocs if re.search(r">\s*\"?[^\s\"]+\.json\"?", opener)]
    if len(found) != 1:
        problems.append(f"user-data.sh should write the agent's JSON configuration from one heredoc, found {len(found)}")
        return None, {}, ""
    opener, body = found[0]
    try:
        config = json.loads(body)
    except json.JSONDecodeError as e:
        problems.append(f"user-data.sh: the agent configuration is not JSON: {e}")
        return None, {}, ""
    placeholders = dict(re.findall(r"s\|(@\w+@)\|\$(\w+)\|g?", opener))
    path = re.search(r">\s*\"?([^\s\"]+\.json)", opener).group(1)
    return config, placeholders, path


def schema_errors(config: dict) -> list[str]:
    try:
        import jsonschema
    except ImportError:
        return ["the jsonschema package is missing from the venv: run scripts/install-deps.sh"]

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    out = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        if error.context:
            error = jsonschema.exceptions.best_match(error.context)
        where = "/".join(map(str, error.absolute_path)) or "(top)"
        out.append(f"agent config {where}: {error.message} (schema {SCHEMA.name})")
    return out


def walk(value, path=""):
    """(path, key, value) of every key in nested dicts and lists."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}/{k}", k, v
            yield from walk(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}/{i}")


def agent_rules(tpl, config, placeholders, sub_vars) -> list[str]:
    out = []
    groups = resources(tpl, "AWS::Logs::LogGroup")
    for path, key, value in walk(config):
        if key == "retention_in_days":
            out.append(f"agent config {path}: the template's LogGroup sets the retention, not the agent")
        if key == "log_group_name":
            target = sub_vars.get(placeholders.get(value, ""), "")
            if target not in groups:
                out.append(f"agent config {path}: {value!r} is not this template's log group "
                           f"(a placeholder the sed in user-data.sh replaces with one of {sorted(groups)})")
    logs = config.get("logs", {}).get("logs_collected", {})
    units = {u for entry in logs.get("journald", {}).get("collect_list", []) for u in entry.get("units", [])}
    files = {entry.get("file_path") for entry in logs.get("files", {}).get("collect_list", [])}
    if "vidworker.service" not in units:
        out.append("agent config: no journald collect_list entry has the unit vidworker.service")
    if "/var/log/cloud-init-output.log" not in files:
        out.append("agent config: /var/log/cloud-init-output.log is not collected (a failed boot's log)")
    for i, decl in enumerate(emf(config).get("metric_declaration", [])):
        for key in ("source_labels", "metric_selectors"):
            if not decl.get(key):
                out.append(f"agent config metric_declaration/{i}: no {key}: the agent drops such a declaration")
    return out


def emf(config: dict) -> dict:
    return config.get("logs", {}).get("metrics_collected", {}).get("prometheus", {}).get("emf_processor", {})


def ctl_command(script: str, config_path: str) -> list[str]:
    m = re.search(r"amazon-cloudwatch-agent-ctl\"? -a fetch-config -m ec2 -s -c \"?file:([^\s\"]+)", script)
    if not m:
        return ["user-data.sh does not start the agent (amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:...)"]
    if m.group(1) != config_path:
        return [f"user-data.sh starts the agent with {m.group(1)}, but writes its configuration to {config_path}"]
    return []


# --- 2. the scrape config ---------------------------------------------------------

def shell_vars(script: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=([^\s$'\"]+)$", script, re.M))


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), text)


def scrape_config(script, heredocs, config, sub_vars, problems) -> dict:
    """The scrape job: {"job": name, "labels": {label: Fn::Sub variable}}."""
    import yaml

    prom = config.get("logs", {}).get("metrics_collected", {}).get("prometheus", {})
    path = prom.get("prometheus_config_path")
    variables = shell_vars(script)
    found = [body for opener, body in heredocs if path and expand(opener, variables).rstrip().endswith(f'{path}"')]
    if len(found) != 1:
        problems.append(f"user-data.sh should write the agent's prometheus_config_path {path} from one heredoc, "
                        f"found {len(found)}")
        return {}
    text = re.sub(r"\$\(([^)]*)\)", "command output", found[0])
    scrape = yaml.safe_load(re.sub(r"\$(\w+)", r"@\1@", text))
    jobs = scrape.get("scrape_configs") or []
    if len(jobs) != 1 or len(jobs[0].get("static_configs") or []) != 1:
        problems.append("prometheus.yaml: expected one scrape job with one static_configs entry")
        return {}
    static = jobs[0]["static_configs"][0]
    port = re.search(r"^METRICS_ADDR=[\d.]+:(\d+)$", script, re.M)
    if static.get("targets") != [f"127.0.0.1:{port.group(1) if port else '?'}"]:
        problems.append(f"prometheus.yaml: targets {static.get('targets')} is not the worker's METRICS_ADDR port "
                        f"on 127.0.0.1")
    labels = {}
    for label, value in (static.get("labels") or {}).items():
        m = re.fullmatch(r"@(\w+)@", str(value))
        labels[label] = sub_vars.get(m.group(1), "") if m else ""
    if labels.get("AutoScalingGroupName") != "AutoScalingGroupName":
        problems.append("prometheus.yaml: the AutoScalingGroupName label must be $AUTOSCALING_GROUP_NAME "
                        "(the group's name, filled in by Fn::Sub)")
    return {"job": jobs[0].get("job_name"), "labels": labels}


# --- 3. the worker's metrics ----------------------------------------------------------

def exported_metrics(problems) -> dict[str, str]:
    """deploy/metrics.txt: name -> type."""
    out = {}
    for n, line in enumerate(METRICS.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            problems.append(f"{METRICS.name}:{n}: expected `<name> <type>`, got {line!r}")
            continue
        out[parts[0]] = parts[1]
    return out


def worker_labels() -> set[str]:
    """Every label name of the worker's label sets (metrics.rs)."""
    src = WORKER_METRICS_RS.read_text()
    return set(re.findall(r"^\s*(?:pub )?(\w+): String,$", src, re.M))


def worker_label_values() -> set:
    """Every lower-case string literal of the worker's telemetry code: the
    label values it can set (outcome, action, stage, ...)."""
    return {v for path in TELEMETRY.glob("*.rs") for v in re.findall(r'"([a-z_]+)"', path.read_text())}


def declarations(config, exported, scrape, problems) -> tuple[str, dict[str, list[frozenset]]]:
    """(the namespace, metric -> the dimension sets the agent declares)."""
    processor = emf(config)
    namespace = processor.get("metric_namespace", "")
    known_labels = worker_labels() | set(scrape.get("labels", {}))
    declared: dict[str, list[frozenset]] = {}
    for i, decl in enumerate(processor.get("metric_declaration", [])):
        where = f"agent config metric_declaration/{i}"
        if decl.get("source_labels") == ["job"] and not re.search(decl.get("label_matcher", ".*"), scrape.get("job") or ""):
            problems.append(f"{where}: label_matcher {decl.get('label_matcher')!r} does not match the scrape job "
                            f"{scrape.get('job')!r}")
        for dims in decl.get("dimensions", []):
            for d in sorted(set(dims) - known_labels):
                problems.append(f"{where}: dimension {d!r} is no label of the worker's metrics or the scrape config")
        for selector in decl.get("metric_selectors", []):
            names = [n for n in exported if re.search(selector, n)]
            if not names:
                problems.append(f"{where}: metric_selectors {selector!r} matches no metric in {METRICS.name}")
            for name in names:
                if exported[name] not in FORWARDED_TYPES:
                    problems.append(f"{where}: {name} is a {exported[name]}, which the CloudWatch agent drops")
                declared.setdefault(name, []).extend(frozenset(d) for d in decl.get("dimensions", []))
    return namespace, declared


# --- the dashboard and the alarms: every metric they name -----------------------------------

def dashboard_uses(tpl, problems) -> list[dict]:
    uses = []
    for rid, res in resources(tpl, "AWS::CloudWatch::Dashboard").items():
        body = res["Properties"].get("DashboardBody")
        text = body.get("Fn::Sub") if isinstance(body, dict) else body
        if not isinstance(text, str):
            problems.append(f"{rid}: DashboardBody should be a Fn::Sub string of JSON")
            continue
        # A number filled in by Fn::Sub (an annotation's threshold) is not JSON yet.
        try:
            dashboard = json.loads(re.sub(r"(:\s*)\$\{[\w:.]+\}", r"\g<1>0", text))
        except json.JSONDecodeError as e:
            problems.append(f"{rid}: DashboardBody is not JSON: {e}")
            continue
        for widget in dashboard.get("widgets", []):
            props = widget.get("properties", {})
            where = f"{rid} widget {props.get('title')!r}"
            if widget.get("type") == "log":
                uses.append({"where": where, "query": props.get("query", "")})
                continue
            uses += widget_uses(where, props, problems)
    return uses


def widget_uses(where, props, problems) -> list[dict]:
    uses, ids, expressions = [], set(), []
    for row in props.get("metrics", []):
        options = row[-1] if row and isinstance(row[-1], dict) else {}
        ids.add(options.get("id"))
        fields = row[:-1] if options else row
        if "expression" in options:
            expressions.append(options["expression"])
            uses += search_uses(where, options["expression"])
            continue
        if any(f in (".", "...") for f in fields) or len(fields) % 2:
            problems.append(f"{where}: write each metric out in full, [namespace, name, dim, value, ...]: {row}")
            continue
        dims = dict(zip(fields[2::2], fields[3::2]))
        uses.append({"where": where, "namespace": fields[0], "metric": fields[1], "dims": dims})
    problems += undefined_ids(where, expressions, ids)
    return uses


def search_uses(where, expression) -> list[dict]:
    uses = []
    for m in re.finditer(r"SEARCH\(\s*'\{([^}]*)\}([^']*)'", expression):
        namespace, *dim_names = [p.strip() for p in m.group(1).split(",")]
        terms = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        metric = terms.pop("MetricName", None)
        dims = {d: terms.get(d, "*") for d in dim_names}
        uses.append({"where": where, "namespace": namespace, "metric": metric, "dims": dims})
    return uses


def undefined_ids(where, expressions, ids) -> list[str]:
    out = []
    for expression in expressions:
        bare = re.sub(r"'[^']*'|\"[^\"]*\"", "", expression)
        for name in re.findall(r"\b[a-z]\w*\b", bare):
            if name not in ids:
                out.append(f"{where}: expression {expression!r} uses {name!r}, which no metric of it has as id")
    return out


def alarm_uses(tpl, problems) -> list[dict]:
    uses = []
    for rid, res in resources(tpl, "AWS::CloudWatch::Alarm").items():
        props = res["Properties"]
        for key in ("AlarmActions", "OKActions"):
            if props.get(key) != [ALARM_ACTION]:
                problems.append(f"{rid}: {key} should be [!If [CreateAlarmTopic, !Ref AlarmTopic, !Ref AlarmTopicArn]]")
        if "MetricName" in props:
            uses.append({"where": rid, "namespace": props.get("Namespace"), "metric": props["MetricName"],
                         "dims": {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}})
            continue
        ids = {m.get("Id") for m in props.get("Metrics", [])}
        expressions = [m["Expression"] for m in props.get("Metrics", []) if "Expression" in m]
        problems += undefined_ids(rid, expressions, ids)
        for m in props.get("Metrics", []):
            if "MetricStat" in m:
                metric = m["MetricStat"]["Metric"]
                uses.append({"where": f"{rid} {m.get('Id')}", "namespace": metric.get("Namespace"),
                             "metric": metric.get("MetricName"),
                             "dims": {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}})
    return uses


# --- 3 and 4: one use -------------------------------------------------------------------

def check_use(tpl, use, namespace, exported, declared) -> list[str]:
    where = use["where"]
    if "query" in use:
        return log_query(tpl, where, use["query"])
    ns, metric, dims = use["namespace"], use["metric"], use["dims"]
    if ns == namespace:
        return worker_use(tpl, where, metric, dims, exported, declared)
    if ns not in AWS_METRICS:
        return [f"{where}: namespace {ns!r} is neither the agent's {namespace!r} nor one of {sorted(AWS_METRICS)}"]
    dim, type_, names = AWS_METRICS[ns]
    out = []
    if metric not in names:
        out.append(f"{where}: {ns} has no metric {metric!r} (known: {', '.join(sorted(names))})")
    ref = reference(dims.get(dim))
    targets = resources(tpl, type_)
    attribute = {"AWS::SQS::Queue": "QueueName"}.get(type_)
    if (not isinstance(ref[1], str) or ref[1] not in targets or (attribute and ref[2:] != (attribute,))
            or (not attribute and ref[0] != "Ref")):
        how = f"!GetAtt <queue>.{attribute}" if attribute else "!Ref <group>"
        out.append(f"{where}: {ns} {metric} dimension {dim} is {dims.get(dim)!r}, not {how} of this template "
                   f"({', '.join(sorted(targets))})")
    elif ns == "AWS/AutoScaling":
        out += collected(tpl, where, ref[1], metric)
    return out


def worker_use(tpl, where, metric, dims, exported, declared) -> list[str]:
    if metric not in exported:
        return [f"{where}: uses {metric}, which the worker does not export ({METRICS.name})"]
    if exported[metric] not in FORWARDED_TYPES:
        return [f"{where}: uses {metric}, a {exported[metric]}, which the CloudWatch agent drops"]
    if frozenset(dims) not in declared.get(metric, []):
        sets = [sorted(s) for s in declared.get(metric, [])]
        return [f"{where}: uses {metric} with dimensions {sorted(dims)}, but the agent declares it with {sets or 'none'} "
                "(user-data.sh's metric_declaration)"]
    spelled = worker_label_values()
    for dim, value in sorted(dims.items()):
        if dim != "AutoScalingGroupName" and value != "*" and value not in spelled:
            return [f"{where}: {metric} {dim}={value!r}: the worker never sets that value "
                    f"(no such string in {TELEMETRY.relative_to(DEPLOY.parent)})"]
    ref = reference(dims.get("AutoScalingGroupName"))
    groups = resources(tpl, "AWS::AutoScaling::AutoScalingGroup")
    if ref[0] != "Ref" or ref[1] not in groups:
        return [f"{where}: {metric}'s AutoScalingGroupName is {dims.get('AutoScalingGroupName')!r}, "
                f"not !Ref of this template's group ({', '.join(sorted(groups))})"]
    return []


def collected(tpl, where, group_id, metric) -> list[str]:
    props = tpl["Resources"][group_id]["Properties"]
    for mc in props.get("MetricsCollection") or []:
        if "Metrics" not in mc or metric in mc["Metrics"]:
            return []
    return [f"{where}: {group_id} does not collect {metric} (MetricsCollection): it would have no data"]


def log_query(tpl, where, query) -> list[str]:
    groups = resources(tpl, "AWS::Logs::LogGroup")
    sources = re.findall(r"SOURCE\s+'([^']*)'", query)
    refs = [reference(s) for s in sources]
    if not refs or any(r[0] != "Ref" or r[1] not in groups for r in refs):
        return [f"{where}: the query's SOURCE {sources} is not this template's log group ({', '.join(sorted(groups))})"]
    return []


def retention(tpl) -> list[str]:
    """The retention parameter offers exactly CloudWatch Logs' values, as the
    agent's schema lists them (-1 there is "never expire")."""
    schema = json.loads(SCHEMA.read_text())
    allowed = set(schema["definitions"]["logsDefinition"]["definitions"]["retentionInDaysDefinition"]["enum"]) - {-1}
    out = []
    for rid, res in resources(tpl, "AWS::Logs::LogGroup").items():
        ref = reference(res["Properties"].get("RetentionInDays"))
        param = tpl.get("Parameters", {}).get(ref[1]) if ref[0] == "Ref" else None
        if not param:
            out.append(f"{rid}: RetentionInDays should be !Ref a parameter (LogRetentionDays)")
            continue
        values = {int(v) for v in param.get("AllowedValues", [])}
        if values != allowed:
            out.append(f"parameter {ref[1]}: AllowedValues differ from CloudWatch Logs' retention values: "
                       f"missing {sorted(allowed - values)}, extra {sorted(values - allowed)}")
        if int(param.get("Default", 0)) not in allowed:
            out.append(f"parameter {ref[1]}: Default {param.get('Default')} is not a retention value")
    return out
