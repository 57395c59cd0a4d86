#!/usr/bin/env python3
"""Checks the AWS deployment files against each other and against the worker.

    .venv/bin/python deploy/check.py [--allow-planned]
    .venv/bin/python deploy/check.py --sync-user-data   # copy user-data.sh into the template

Prints one line per check (PASS/FAIL, with indented details under a
failure) and exits non-zero when any check fails:

- cfn-lint passes on deploy/cloudformation.yaml;
- the scaling policy is target tracking on job-queue backlog / in-service
  instances of this group;
- the worker role grants exactly the IAM actions of the AWS SDK calls in
  crates/*/src (operator-only calls excluded; an unknown call fails);
- names shared by the role, the group and the user data agree;
- the queue settings equal what `vidworker queue-init` creates (run against
  a throwaway moto server; needs the binary: VIDWORKER_BIN, default
  $CARGO_TARGET_DIR/debug/vidworker, else target/debug/vidworker);
- the stop timeout covers SHUTDOWN_GRACE, and the lifecycle hook covers the stop;
- deploy/user-data.sh is the template's user data, and the unit it embeds is
  deploy/vidworker.service, byte for byte;
- systemd-analyze verify and shellcheck pass;
- the CloudWatch agent's configuration is valid against the agent's schema,
  and every metric the agent, the dashboard and the alarms name is exported
  by the worker (deploy/metrics.txt) and of this template (deploy/cloudwatch.py).

Needs cfn-lint and jsonschema (pip, pinned by scripts/install-deps.sh), boto3
and moto (the venv's), systemd-analyze (Debian package systemd) and shellcheck (Debian
package shellcheck).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boot  # deploy/boot.py
import cloudwatch  # deploy/cloudwatch.py

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "cloudformation.yaml"
UNIT = DEPLOY / "vidworker.service"
UNITS = (UNIT, DEPLOY / "vidworker-unhealthy.service")
USER_DATA = DEPLOY / "user-data.sh"
VENV_BIN = Path(sys.executable).parent
# Cargo's own target directory, wherever CARGO_TARGET_DIR puts it.
DEFAULT_BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "vidworker"

# EC2 refuses user data above 16 KB (before base64).
USER_DATA_LIMIT = 16 * 1024
# Room left for each Fn::Sub value when estimating the rendered size (an ARN
# or a queue URL is about 100 characters).
SUB_VALUE_ALLOWANCE = 160

# --- IAM: which SDK operation needs which action ---------------------------
# Keyed "service:ApiName" (the botocore/API name of the operation). An
# operation the code calls that is neither here nor in OPERATOR_ONLY fails the
# check, so a new SDK call cannot reach production without its permission.
API_TO_IAM: dict[str, tuple[str, ...]] = {
    # S3 objects
    "s3:GetObject": ("s3:GetObject",),
    "s3:HeadObject": ("s3:GetObject",),
    "s3:PutObject": ("s3:PutObject",),
    "s3:CreateMultipartUpload": ("s3:PutObject",),
    "s3:UploadPart": ("s3:PutObject",),
    "s3:CompleteMultipartUpload": ("s3:PutObject",),
    "s3:AbortMultipartUpload": ("s3:AbortMultipartUpload",),
    "s3:ListParts": ("s3:ListMultipartUploadParts",),
    "s3:DeleteObject": ("s3:DeleteObject",),
    "s3:DeleteObjects": ("s3:DeleteObject",),
    "s3:CopyObject": ("s3:GetObject", "s3:PutObject"),
    "s3:GetObjectTagging": ("s3:GetObjectTagging",),
    "s3:PutObjectTagging": ("s3:PutObjectTagging",),
    # S3 bucket
    "s3:HeadBucket": ("s3:ListBucket",),
    "s3:ListObjects": ("s3:ListBucket",),
    "s3:ListObjectsV2": ("s3:ListBucket",),
    "s3:ListObjectVersions": ("s3:ListBucketVersions",),
    "s3:ListMultipartUploads": ("s3:ListBucketMultipartUploads",),
    "s3:GetBucketLocation": ("s3:GetBucketLocation",),
    "s3:GetBucketVersioning": ("s3:GetBucketVersioning",),
    # SQS
    "sqs:ReceiveMessage": ("sqs:ReceiveMessage",),
    "sqs:DeleteMessage": ("sqs:DeleteMessage",),
    "sqs:DeleteMessageBatch": ("sqs:DeleteMessage",),
    "sqs:ChangeMessageVisibility": ("sqs:ChangeMessageVisibility",),
    "sqs:ChangeMessageVisibilityBatch": ("sqs:ChangeMessageVisibility",),
    "sqs:SendMessage": ("sqs:SendMessage",),
    "sqs:SendMessageBatch": ("sqs:SendMessage",),
    "sqs:GetQueueAttributes": ("sqs:GetQueueAttributes",),
    "sqs:GetQueueUrl": ("sqs:GetQueueUrl",),
    "sqs:ListDeadLetterSourceQueues": ("sqs:ListDeadLetterSourceQueues",),
    "sqs:StartMessageMoveTask": ("sqs:StartMessageMoveTask",),
    "sqs:ListMessageMoveTasks": ("sqs:ListMessageMoveTasks",),
    "sqs:CancelMessageMoveTask": ("sqs:CancelMessageMoveTask",),
    # SNS
    "sns:Publish": ("sns:Publish",),
    "sns:PublishBatch": ("sns:Publish",),
    "sns:GetTopicAttributes": ("sns:GetTopicAttributes",),
    # Auto Scaling
    "autoscaling:CompleteLifecycleAction": ("autoscaling:CompleteLifecycleAction",),
    "autoscaling:SetInstanceProtection": ("autoscaling:SetInstanceProtection",),
    "autoscaling:SetInstanceHealth": ("autoscaling:SetInstanceHealth",),
    # Secrets Manager
    "secretsmanager:GetSecretValue": ("secretsmanager:GetSecretValue",),
    # CloudFormation
    "cloudformation:SignalResource": ("cloudformation:SignalResource",),
    "autoscaling:RecordLifecycleActionHeartbeat": ("autoscaling:RecordLifecycleActionHeartbeat",),
    "autoscaling:DescribeAutoScalingInstances": ("autoscaling:DescribeAutoScalingInstances",),
}

# Reading or deleting a specific version is a separate permission.
VERSIONED_IAM = {
    "s3:GetObject": "s3:GetObjectVersion",
    "s3:HeadObject": "s3:GetObjectVersion",
    "s3:DeleteObject": "s3:DeleteObjectVersion",
}

# Operator set-up, not the worker's role: these run only in admin commands
# (`vidworker queue-init` and friends) with the operator's credentials, or are
# done by this CloudFormation stack itself.
OPERATOR_ONLY = {
    "s3:CreateBucket",
    "s3:DeleteBucket",
    "s3:PutBucketVersioning",
    "s3:PutBucketLifecycleConfiguration",
    "s3:PutBucketEncryption",
    "s3:PutPublicAccessBlock",
    "s3:PutBucketPolicy",
    "sqs:CreateQueue",
    "sqs:DeleteQueue",
    "sqs:SetQueueAttributes",
    "sqs:PurgeQueue",
    "sqs:TagQueue",
    "sns:CreateTopic",
    "sns:DeleteTopic",
    "sns:Subscribe",
    "sns:SetTopicAttributes",
}

# Granted by the template ahead of the code that will call them (the
# reconciler, DLQ tooling, events, the lifecycle hook). `--allow-planned`
# tolerates exactly these as role-only; drop the flag once they are coded.
PLANNED = {
    "sns:Publish",
    "autoscaling:CompleteLifecycleAction",
    "sqs:SendMessage",  # the reconciler re-sends stranded jobs to the job queue
    "s3:DeleteObject",
}

# Statements of the worker role that serve deploy/user-data.sh, not the worker.
USER_DATA_SID_PREFIX = "UserData"
USER_DATA_STATEMENTS = {
    "UserDataArtifact": {"s3:GetObject"},
}

# AWS-managed policies the role may carry: they serve agents on the
# instance, not the worker, whose every action is in the inline policy.
AGENT_POLICIES = {
    "AmazonSSMManagedInstanceCore": "SSM Session Manager (amazon-ssm-agent)",
    "CloudWatchAgentServerPolicy": "the CloudWatch agent (logs and metrics)",
}

# The worker's S3 scope: reads under originals/, writes under processed/
# (crates/worker/src/config.rs's defaults; the user data sets neither).
S3_SCOPE = {
    "Originals": ("originals/", {"s3:GetObject"}),
    "Renditions": ("processed/", {"s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"}),
}

# Receivers that hold an SDK client, and their methods that are not operations.
CLIENT_NAMES = re.compile(r"^(client|\w+_client|s3|sqs|sns|autoscaling|asg|cloudformation|secrets)$")
CLIENT_NON_OPERATIONS = {"clone", "config", "as_ref", "to_owned"}


class CheckFailed(Exception):
    """A check's failure: the message, then optional detail lines."""

    def __init__(self, message: str, details: list[str] | None = None):
        super().__init__(message)
        self.details = details or []


# --- template helpers -------------------------------------------------------

def load_template() -> dict:
    from cfnlint.decode import decode_str

    template, matches = decode_str(TEMPLATE.read_text())
    if matches or template is None:
        raise CheckFailed(f"{TEMPLATE.relative_to(ROOT)} does not parse", [str(m) for m in matches])
    return template


def resources_of_type(tpl: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in tpl["Resources"].items() if v.get("Type") == type_}


def only_resource(tpl: dict, type_: str) -> tuple[str, dict]:
    found = resources_of_type(tpl, type_)
    if len(found) != 1:
        raise CheckFailed(f"expected exactly one {type_}, found {len(found)}")
    return next(iter(found.items()))


def parameter(tpl: dict, name: str) -> dict:
    try:
        return tpl["Parameters"][name]
    except KeyError:
        raise CheckFailed(f"the template has no parameter {name}") from None


def scalar(tpl: dict, value) -> int:
    """A number in the template: a literal or a Ref to a parameter (its default)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        p = parameter(tpl, value["Ref"])
        if "Default" not in p:
            raise CheckFailed(f"parameter {value['Ref']} has no default")
        value = p["Default"]
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"cannot read {value!r} as a number") from None


def getatt(value) -> tuple[str, str] | None:
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        v = value["Fn::GetAtt"]
        if isinstance(v, str):
            v = v.split(".", 1)
        return v[0], v[1]
    return None


def is_ref(value, name: str) -> bool:
    return isinstance(value, dict) and value.get("Ref") == name


def plain(value):
    """cfn-lint's node types → plain dict/list/str, for comparisons."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def queues(tpl: dict) -> tuple[str, dict, str, dict]:
    """(job queue id, props, dead-letter queue id, props)."""
    sqs = resources_of_type(tpl, "AWS::SQS::Queue")
    jobs = [(k, v) for k, v in sqs.items() if "RedrivePolicy" in v.get("Properties", {})]
    if len(jobs) != 1:
        raise CheckFailed(f"expected one queue with a RedrivePolicy, found {len(jobs)}")
    job_id, job = jobs[0]
    target = getatt(job["Properties"]["RedrivePolicy"].get("deadLetterTargetArn"))
    if not target or target[0] not in sqs or target[1] != "Arn":
        raise CheckFailed(f"{job_id}'s RedrivePolicy does not point at a queue of this template")
    return job_id, job["Properties"], target[0], sqs[target[0]]["Properties"]


def user_data_sub(tpl: dict) -> tuple[str, dict]:
    """The launch template's user data: (Fn::Sub string, its variable map)."""
    _, lt = only_resource(tpl, "AWS::EC2::LaunchTemplate")
    ud = lt["Properties"]["LaunchTemplateData"].get("UserData")
    try:
        sub = ud["Fn::Base64"]["Fn::Sub"]
    except (TypeError, KeyError):
        raise CheckFailed("UserData is not Fn::Base64 of Fn::Sub") from None
    if isinstance(sub, str):
        return sub, {}
    return str(sub[0]), dict(sub[1])


# --- user-data helpers ------------------------------------------------------

SUB_ASSIGNMENT = re.compile(r"^\s*([A-Z_][A-Z0-9_]*)='\$\{([A-Za-z0-9:.]+)\}'(?:\s*\\)?$")


def sub_assignments(script: str) -> dict[str, str]:
    """Shell variable → Fn::Sub variable, from the script's `NAME='${X}'` block."""
    return {m.group(1): m.group(2) for line in script.splitlines() if (m := SUB_ASSIGNMENT.match(line))}


def heredocs(script: str) -> list[tuple[str, str]]:
    """(the command line that opens it, body with its final newline) per heredoc."""
    found = []
    for m in re.finditer(r"^(.*)<<-?\s*(['\"]?)(\w+)\2[^\n]*\n", script, re.M):
        end = re.compile(rf"^{re.escape(m.group(3))}$", re.M).search(script, m.end())
        if end:
            found.append((m.group(1), script[m.end():end.start()]))
    return found


def unit_settings(text: str) -> dict[str, str]:
    """[Service] key → value (last one wins, as in systemd)."""
    section, out = None, {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def timespan_seconds(value: str) -> float:
    units = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "": 1, "s": 1, "sec": 1,
             "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        if m.start() != pos or m.group(2) not in units:
            raise CheckFailed(f"cannot read the time span {value!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(value) or not value:
        raise CheckFailed(f"cannot read the time span {value!r}")
    return total


# --- the SDK calls in the Rust source ---------------------------------------

CHAR_LITERAL = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'")
RAW_STRING = re.compile(r'b?r(#*)"')


def strip_rust(src: str) -> str:
    """Comments and the contents of string/char literals blanked, newlines kept."""
    out = list(src)
    n = len(src)

    def blank(a: int, b: int) -> None:
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    i = 0
    while i < n:
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := RAW_STRING.match(src, i)) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = src.find('"' + m.group(1), m.end())
            end = n if end < 0 else end
            blank(m.end(), end)
            i = end + 1 + len(m.group(1))
        elif src[i] == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i + 1, min(j, n))
            i = j + 1
        elif src[i] == "'":
            m = CHAR_LITERAL.match(src, i)
            if m:
                blank(i + 1, m.end() - 1)
                i = m.end()
            else:  # a lifetime
                i += 1
        else:
            i += 1
    return "".join(out)


METHOD_CALL = re.compile(r"(?:\b(\w+)\s*)?\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)")


def sdk_operations() -> dict[str, dict[str, str]]:
    """botocore service name → {snake_case operation: ApiName}."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    out = {}
    for service in ("s3", "sqs", "sns", "autoscaling", "cloudformation", "secretsmanager"):
        model = session.get_service_model(service)
        out[service] = {xform_name(op): op for op in model.operation_names}
    return out


def derive_calls() -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """Scan crates/*/src: (IAM action → call sites, operator-only API → call
    sites, errors)."""
    ops_by_service = sdk_operations()
    all_ops = {op: svc for svc, ops in ops_by_service.items() for op in ops}
    actions: dict[str, list[str]] = {}
    operator: dict[str, list[str]] = {}
    errors: list[str] = []
    files = sorted(ROOT.glob("crates/*/src/**/*.rs"))
    if not files:
        errors.append("no Rust source under crates/*/src")
    for path in files:
        code = strip_rust(path.read_text())
        rel = path.relative_to(ROOT)
        services = set()
        for crate in sorted(set(re.findall(r"\baws_sdk_(\w+)", code))):
            if crate not in ops_by_service:
                errors.append(f"{rel}: uses aws_sdk_{crate}, which this check has no mapping for")
            else:
                services.add(crate)
        for m in METHOD_CALL.finditer(code):
            receiver, name = m.group(1), m.group(2)
            line = code.count("\n", 0, m.start(2)) + 1
            site = f"{rel}:{line} {name}()"
            owners = [svc for svc in services if name in ops_by_service[svc]]
            if not owners and receiver in ops_by_service and name in ops_by_service[receiver]:
                # `clients.sqs.receive_message()` in a file that names no SDK crate.
                owners = [receiver]
            if not owners:
                if receiver and CLIENT_NAMES.match(receiver) and name not in CLIENT_NON_OPERATIONS:
                    if name in all_ops and not services:
                        errors.append(f"{site}: an SDK call in a file that imports no aws_sdk_* crate; cannot tell the service")
                    elif name not in all_ops:
                        errors.append(f"{site}: a call on a client that is no known operation of {sorted(services) or 'any imported SDK'}")
                continue
            if len(owners) > 1:
                errors.append(f"{site}: ambiguous between {owners}")
                continue
            api = f"{owners[0]}:{ops_by_service[owners[0]][name]}"
            if api in OPERATOR_ONLY:
                operator.setdefault(api, []).append(site)
                continue
            if api not in API_TO_IAM:
                errors.append(f"{site}: {api} is neither in API_TO_IAM nor in OPERATOR_ONLY")
                continue
            granted = list(API_TO_IAM[api])
            # A request for one version needs the *Version permission.
            send = code.find(".send()", m.end())
            chain = code[m.end(): send if send >= 0 else m.end()]
            if api in VERSIONED_IAM and re.search(r"\.\s*version_id\s*\(", chain):
                granted = [VERSIONED_IAM[api]]
            for action in granted:
                actions.setdefault(action, []).append(f"{site} ({api})")
    return actions, operator, errors


# --- the checks ---------------------------------------------------------------

def check_cfn_lint(args, tpl) -> str:
    exe = VENV_BIN / "cfn-lint"
    cmd = [str(exe)] if exe.exists() else ([shutil.which("cfn-lint")] if shutil.which("cfn-lint") else None)
    if not cmd:
        raise CheckFailed("cfn-lint is not installed: pip install into the venv (see scripts/install-deps.sh)")
    res = subprocess.run(cmd + [str(TEMPLATE.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise CheckFailed(f"cfn-lint exited {res.returncode}", (res.stdout + res.stderr).splitlines())
    version = subprocess.run(cmd + ["--version"], capture_output=True, text=True).stdout.strip()
    return f"no findings ({version})"


def check_scaling(args, tpl) -> str:
    group_id, group = only_resource(tpl, "AWS::AutoScaling::AutoScalingGroup")
    job_id, _, _, _ = queues(tpl)
    policies = resources_of_type(tpl, "AWS::AutoScaling::ScalingPolicy")
    if len(policies) != 1:
        raise CheckFailed(f"expected one scaling policy, found {len(policies)}")
    pid, policy = next(iter(policies.items()))
    props = policy["Properties"]
    if props.get("PolicyType") != "TargetTrackingScaling":
        raise CheckFailed(f"{pid} is {props.get('PolicyType')!r}, not TargetTrackingScaling")
    if not is_ref(props.get("AutoScalingGroupName"), group_id):
        raise CheckFailed(f"{pid} does not scale {group_id}")
    ttc = props["TargetTrackingConfiguration"]
    target = scalar(tpl, ttc["TargetValue"])
    metrics = ttc.get("CustomizedMetricSpecification", {}).get("Metrics")
    if not metrics:
        raise CheckFailed(f"{pid} has no metric math (CustomizedMetricSpecification.Metrics)")

    visible = in_service = None
    for m in metrics:
        stat = m.get("MetricStat")
        if not stat:
            continue
        metric = stat["Metric"]
        dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        if (metric["Namespace"], metric["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible"):
            if getatt(dims.get("QueueName")) == (job_id, "QueueName"):
                visible = m["Id"]
        if (metric["Namespace"], metric["MetricName"]) == ("AWS/AutoScaling", "GroupInServiceInstances"):
            name = dims.get("AutoScalingGroupName")
            if is_ref(name, group_id) or plain(name) == plain(group["Properties"].get("AutoScalingGroupName")):
                in_service = m["Id"]
    if not visible:
        raise CheckFailed(f"no metric is ApproximateNumberOfMessagesVisible of {job_id}")
    if not in_service:
        raise CheckFailed(f"no metric is GroupInServiceInstances of {group_id}")
    returned = [m for m in metrics if m.get("ReturnData", True)]
    if len(returned) != 1 or "Expression" not in returned[0]:
        raise CheckFailed("exactly one metric, an expression, must have ReturnData true",
                          [f"ReturnData true: {[m['Id'] for m in returned]}"])
    expr = returned[0]["Expression"]
    v, s = re.escape(visible), re.escape(in_service)
    divides = re.search(rf"\b{v}\s*/\s*(?:{s}\b|MAX\(\s*\[\s*{s}\s*,\s*1\s*\]\s*\))", expr)
    guarded = re.search(rf"MAX\(\s*\[\s*{s}\s*,\s*1\s*\]\s*\)|IF\(\s*{s}\s*(?:>|>=|!=)\s*[01]?\s*,", expr)
    if not divides:
        raise CheckFailed(f"the expression {expr!r} does not divide {visible} by {in_service}")
    if not guarded:
        raise CheckFailed(f"the expression {expr!r} does not guard against {in_service} = 0")
    collected = group["Properties"].get("MetricsCollection") or []
    if not any("Metrics" not in mc or "GroupInServiceInstances" in mc["Metrics"] for mc in collected):
        raise CheckFailed(f"{group_id} does not collect GroupInServiceInstances (MetricsCollection)")
    if target <= 0:
        raise CheckFailed(f"target value {target} must be positive")
    return f"{pid}: target tracking, {returned[0]['Id']} = {expr} (visible in {job_id} / in service in {group_id}), target {target}"


def managed_policy_names(role: dict) -> set[str]:
    names = set()
    for arn in role["Properties"].get("ManagedPolicyArns") or []:
        text = plain(arn)
        text = text.get("Fn::Sub", "") if isinstance(text, dict) else str(text)
        names.add(text.rsplit("/", 1)[-1])
    return names


def role_statements(tpl) -> list[dict]:
    _, role = only_resource(tpl, "AWS::IAM::Role")
    unknown = managed_policy_names(role) - set(AGENT_POLICIES)
    if unknown:
        raise CheckFailed(f"the worker role has managed policies {sorted(unknown)}; keep every worker action "
                          f"in its inline policy (only the agents' {sorted(AGENT_POLICIES)} are managed)")
    statements = []
    for policy in role["Properties"].get("Policies", []):
        statements.extend(policy["PolicyDocument"]["Statement"])
    return statements


def check_iam(args, tpl) -> str:
    problems = []
    worker: dict[str, set[str]] = {}
    user_data: dict[str, set[str]] = {}
    for st in role_statements(tpl):
        sid = st.get("Sid")
        if not sid:
            problems.append(f"a statement without Sid: {plain(st)}")
            continue
        if st.get("Effect") != "Allow" or "NotAction" in st or "NotResource" in st:
            problems.append(f"{sid}: only plain Allow statements are expected")
        acts = st.get("Action")
        acts = [acts] if isinstance(acts, str) else list(acts or [])
        for a in acts:
            if "*" in a:
                problems.append(f"{sid}: wildcard action {a}")
        res = st.get("Resource")
        for r in res if isinstance(res, list) else [res]:
            if r == "*" or (isinstance(r, str) and r.endswith(":*")):
                problems.append(f"{sid}: resource {r!r} is not a specific resource")
        (user_data if sid.startswith(USER_DATA_SID_PREFIX) else worker)[sid] = set(acts)

    if {k: v for k, v in user_data.items()} != USER_DATA_STATEMENTS:
        problems.append(f"user-data statements are {sorted((k, sorted(v)) for k, v in user_data.items())}, "
                        f"expected {sorted((k, sorted(v)) for k, v in USER_DATA_STATEMENTS.items())}")

    derived, operator, errors = derive_calls()
    problems.extend(errors)
    granted = set().union(*worker.values()) if worker else set()
    called = set(derived)
    missing = sorted(called - granted)
    extra = sorted(granted - called)
    for a in missing:
        problems.append(f"called by the code but not granted: {a} <- " + "; ".join(derived[a]))
    planned_extra = [a for a in extra if a in PLANNED]
    unplanned_extra = [a for a in extra if a not in PLANNED]
    notes = []
    for a in unplanned_extra:
        problems.append(f"granted but called by no code: {a}")
    if planned_extra and not args.allow_planned:
        problems.append("granted but not yet called by the code (planned): " + ", ".join(planned_extra)
                        + "; pass --allow-planned until they are coded")
    coded_planned = sorted(PLANNED & called)
    if args.allow_planned and coded_planned:
        notes.append("planned and already called by the code: " + ", ".join(coded_planned))
    if args.allow_planned and not planned_extra:
        notes.append("every planned action is now called: drop --allow-planned")

    detail_lines = [f"{sid}: {', '.join(sorted(a))}" for sid, a in worker.items()]
    detail_lines.append("operator-only calls excluded: " + (", ".join(sorted(operator)) or "none"))
    if problems:
        raise CheckFailed(f"the worker role and the SDK calls in crates/*/src differ ({len(problems)} problem(s))",
                          problems + detail_lines)
    msg = f"{len(called)} actions called by crates/*/src, all granted; {len(granted)} granted"
    if planned_extra:
        msg += "; granted ahead of the code (--allow-planned): " + ", ".join(planned_extra)
    if notes:
        msg += "; " + "; ".join(notes)
    return msg


def config_default(field: str) -> str:
    src = (ROOT / "crates/worker/src/config.rs").read_text()
    m = re.search(rf'\b{field}: "([^"]*)"\.into\(\)', src)
    if not m:
        raise CheckFailed(f"cannot find the default of {field} in crates/worker/src/config.rs")
    return m.group(1)


def check_s3_scope(args, tpl) -> str:
    """The worker reads originals/, writes processed/, lists only those; the
    producer policy writes originals/ and sends jobs."""
    statements = {st.get("Sid"): st for st in role_statements(tpl)}
    problems = []
    prefixes = []
    for sid, (default, actions) in S3_SCOPE.items():
        prefix = config_default("originals_prefix" if sid == "Originals" else "processed_prefix")
        if prefix != default:
            problems.append(f"config.rs's default prefix is {prefix!r}, the policy's {default!r}")
        prefixes.append(prefix)
        st = statements.get(sid) or {}
        if set(st.get("Action") or []) != actions:
            problems.append(f"{sid} grants {sorted(st.get('Action') or [])}, expected {sorted(actions)}")
        if plain(st.get("Resource")) != {"Fn::Sub": "${Bucket.Arn}/" + prefix + "*"}:
            problems.append(f"{sid}'s resource {plain(st.get('Resource'))} is not ${{Bucket.Arn}}/{prefix}*")
    for sid, st in statements.items():
        res = json.dumps(plain(st.get("Resource")))
        if sid not in S3_SCOPE and "${Bucket.Arn}/" in res:
            problems.append(f"{sid} also grants object actions in the bucket: {res}")
    listing = statements.get("Bucket") or {}
    wanted = {"StringLike": {"s3:prefix": [p + "*" for p in prefixes]}}
    if listing.get("Action") != ["s3:ListBucket"] or plain(listing.get("Condition")) != wanted:
        problems.append(f"Bucket must grant only s3:ListBucket under {wanted}, has {plain(listing)}")
    _, producer = only_resource(tpl, "AWS::IAM::ManagedPolicy")
    granted = {a: json.dumps(plain(st.get("Resource")))
               for st in producer["Properties"]["PolicyDocument"]["Statement"] for a in st["Action"]}
    want = {"s3:PutObject": json.dumps({"Fn::Sub": "${Bucket.Arn}/" + prefixes[0] + "*"}),
            "sqs:SendMessage": json.dumps({"Fn::GetAtt": ["JobQueue", "Arn"]})}
    if granted != want:
        problems.append(f"the producer policy grants {granted}, expected {want}")
    if problems:
        raise CheckFailed("the S3 scope of the roles is not what the worker needs", problems)
    return (f"worker: Get {prefixes[0]}*, Put/Abort/Delete {prefixes[1]}*, List under both; "
            f"producer: Put {prefixes[0]}* and SendMessage")


def check_names(args, tpl) -> str:
    group_id, group = only_resource(tpl, "AWS::AutoScaling::AutoScalingGroup")
    name = plain(group["Properties"].get("AutoScalingGroupName"))
    if not isinstance(name, dict) or set(name) != {"Fn::Sub"} or not isinstance(name["Fn::Sub"], str):
        raise CheckFailed(f"{group_id} needs an explicit AutoScalingGroupName (a plain Fn::Sub string)")
    lifecycle = [st for st in role_statements(tpl) if "autoscaling:CompleteLifecycleAction" in (st.get("Action") or [])]
    if len(lifecycle) != 1:
        raise CheckFailed("expected one statement granting autoscaling:CompleteLifecycleAction")
    arn = plain(lifecycle[0]["Resource"])
    if not (isinstance(arn, dict) and str(arn.get("Fn::Sub", "")).endswith(":autoScalingGroupName/" + name["Fn::Sub"])):
        raise CheckFailed(f"CompleteLifecycleAction's resource {arn} is not the group {name['Fn::Sub']}")
    hooks = group["Properties"].get("LifecycleHookSpecificationList") or []
    terminating = [h for h in hooks if h.get("LifecycleTransition") == "autoscaling:EC2_INSTANCE_TERMINATING"]
    if len(terminating) != 1:
        raise CheckFailed(f"{group_id} needs one EC2_INSTANCE_TERMINATING lifecycle hook")
    _, variables = user_data_sub(tpl)
    given = {k: plain(v) for k, v in variables.items()}
    if given.get("AutoScalingGroupName") != name:
        raise CheckFailed(f"user data's AutoScalingGroupName {given.get('AutoScalingGroupName')} is not {name}")
    if given.get("LifecycleHookName") != terminating[0]["LifecycleHookName"]:
        raise CheckFailed(f"user data's LifecycleHookName {given.get('LifecycleHookName')} "
                          f"is not {terminating[0]['LifecycleHookName']}")
    return f"group {name['Fn::Sub']}, hook {terminating[0]['LifecycleHookName']}: the role, the group and the user data agree"


def check_receive_limits(args, tpl) -> str:
    _, job, _, _ = queues(tpl)
    queue_limit = scalar(tpl, job["RedrivePolicy"]["maxReceiveCount"])
    worker = scalar(tpl, {"Ref": "MaxAttempts"})
    if not queue_limit > worker:
        raise CheckFailed(f"maxReceiveCount {queue_limit} must exceed MAX_ATTEMPTS {worker}: "
                          "the worker gives up first, the DLQ catches only what it cannot handle")
    return f"MAX_ATTEMPTS {worker} < the queue's maxReceiveCount {queue_limit}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(env: dict[str, str] | None = None):
    """A moto server on a free port for the block; yields its endpoint."""
    moto = VENV_BIN / "moto_server"
    if not moto.exists():
        raise CheckFailed(f"{moto} is missing: run scripts/install-deps.sh")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                                  env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise CheckFailed("moto did not start", log.read().decode(errors="replace").splitlines()[-10:])
                    time.sleep(0.2)
            yield endpoint
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def check_queue_init(args, tpl) -> str:
    job_id, job, dlq_id, dlq = queues(tpl)
    want_job = {
        "VisibilityTimeout": scalar(tpl, job.get("VisibilityTimeout", 30)),
        "MessageRetentionPeriod": scalar(tpl, job.get("MessageRetentionPeriod", 345600)),
        "ReceiveMessageWaitTimeSeconds": scalar(tpl, job.get("ReceiveMessageWaitTimeSeconds", 0)),
        "maxReceiveCount": scalar(tpl, job["RedrivePolicy"]["maxReceiveCount"]),
    }
    want_dlq = {"MessageRetentionPeriod": scalar(tpl, dlq.get("MessageRetentionPeriod", 345600))}

    binary = Path(os.environ.get("VIDWORKER_BIN", DEFAULT_BIN))
    if not os.access(binary, os.X_OK):
        raise CheckFailed(f"the vidworker binary {binary} is missing: build it (cargo build -p vidworker) "
                          "or point VIDWORKER_BIN at one")
    import boto3

    with moto_server() as endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            SQS_QUEUE_URL=f"{endpoint}/123456789012/vidworker-jobs",
            S3_BUCKET="check-bucket",
            AWS_ENDPOINT_URL=endpoint,
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            LOG_FORMAT="text",
        )
        # The visibility timeout is left to the binary's default on
        # purpose: the comparison is with what the worker assumes.
        cmd = [str(binary), "queue-init", "--max-receive-count", str(want_job["maxReceiveCount"])]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise CheckFailed(f"{' '.join(cmd)} exited {res.returncode}", (res.stdout + res.stderr).splitlines()[-10:])
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        def attrs(name):
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]

        a = attrs("vidworker-jobs")
        d = attrs("vidworker-jobs-dlq")
    got_job = {
        "VisibilityTimeout": int(a["VisibilityTimeout"]),
        "MessageRetentionPeriod": int(a["MessageRetentionPeriod"]),
        "ReceiveMessageWaitTimeSeconds": int(a["ReceiveMessageWaitTimeSeconds"]),
        "maxReceiveCount": int(json.loads(a.get("RedrivePolicy", "{}")).get("maxReceiveCount", -1)),
    }
    got_dlq = {"MessageRetentionPeriod": int(d["MessageRetentionPeriod"])}
    diffs = [f"{job_id}.{k}: template {want_job[k]}, queue-init {got_job[k]}" for k in want_job if want_job[k] != got_job[k]]
    diffs += [f"{dlq_id}.{k}: template {want_dlq[k]}, queue-init {got_dlq[k]}" for k in want_dlq if want_dlq[k] != got_dlq[k]]
    if diffs:
        raise CheckFailed("the template's queues differ from what `vidworker queue-init` creates", diffs)
    shown = ", ".join(f"{k} {v}" for k, v in want_job.items())
    return f"{job_id} ({shown}) and {dlq_id} (retention {want_dlq['MessageRetentionPeriod']}) match queue-init"


def shutdown_grace(tpl) -> tuple[int, int, str]:
    """(default, largest allowed, where from) of the worker's SHUTDOWN_GRACE."""
    script = USER_DATA.read_text()
    shell_to_sub = sub_assignments(script)
    for opener, body in heredocs(script):
        if "/env" not in opener:
            continue
        for line in body.splitlines():
            m = re.match(r"^SHUTDOWN_GRACE=['\"]?(\$?\w+)['\"]?$", line)
            if not m:
                continue
            value = m.group(1)
            if value.isdigit():
                return int(value), int(value), "the env file written by user-data.sh"
            sub = shell_to_sub.get(value.lstrip("$"))
            if not sub or sub not in tpl.get("Parameters", {}):
                raise CheckFailed(f"cannot resolve SHUTDOWN_GRACE={value} in user-data.sh's env file")
            p = tpl["Parameters"][sub]
            default = int(p["Default"])
            if "MaxValue" not in p:
                raise CheckFailed(f"parameter {sub} (SHUTDOWN_GRACE) needs a MaxValue, "
                                  "or a deployment may set a grace longer than the stop timeout")
            return default, int(p["MaxValue"]), f"user-data.sh's env file (parameter {sub})"
    binary = Path(os.environ.get("VIDWORKER_BIN", DEFAULT_BIN))
    if not os.access(binary, os.X_OK):
        raise CheckFailed(f"SHUTDOWN_GRACE is not in the env file and the binary {binary} is missing")
    env = {k: v for k, v in os.environ.items() if k != "SHUTDOWN_GRACE"}
    text = subprocess.run([str(binary), "run", "--help"], env=env, capture_output=True, text=True).stdout
    m = re.search(r"--shutdown-grace\b.*?(?=\n\s*-|\Z)", text, re.S)
    d = re.search(r"\[default: (\d+)\]", m.group(0)) if m else None
    if not d or "SHUTDOWN_GRACE" not in m.group(0):
        raise CheckFailed("`vidworker run --help` shows no SHUTDOWN_GRACE default")
    return int(d.group(1)), int(d.group(1)), "`vidworker run --help`"


def handback_budget() -> int:
    """The worker's HANDBACK_TIMEOUT in seconds, read from the code: what
    jobs cancelled at the end of the grace period get to hand back."""
    source = (ROOT / "crates/worker/src/runner/mod.rs").read_text()
    m = re.search(r"pub const HANDBACK_TIMEOUT: Duration = Duration::from_secs\((\d+)\);", source)
    if not m:
        raise CheckFailed("HANDBACK_TIMEOUT not found in crates/worker/src/runner/mod.rs")
    return int(m.group(1))


# What systemd's stop must cover beyond the drain: the process's exit,
# the logs flushed, the lifecycle action completed.
STOP_MARGIN = 10


def check_stop_timeout(args, tpl) -> str:
    """The whole shutdown fits TimeoutStopSec: the receive in flight is
    cancelled at once (0 s), then the grace period, then the hand-back of
    what did not finish, then a margin."""
    settings = unit_settings(UNIT.read_text())
    if "TimeoutStopSec" not in settings:
        raise CheckFailed("vidworker.service sets no TimeoutStopSec")
    stop = timespan_seconds(settings["TimeoutStopSec"])
    default, largest, source = shutdown_grace(tpl)
    handback = handback_budget()
    need = largest + handback + STOP_MARGIN
    if stop < need:
        raise CheckFailed(f"TimeoutStopSec {stop:g} s < SHUTDOWN_GRACE {largest} s + hand-back {handback} s "
                          f"+ {STOP_MARGIN} s ({source})")
    extra = f", at most {largest} s" if largest != default else ""
    return (f"TimeoutStopSec {stop:g} s >= receive 0 s (cancelled) + SHUTDOWN_GRACE {default} s{extra} "
            f"+ hand-back {handback} s + {STOP_MARGIN} s (from {source})")


def check_hook_timeout(args, tpl) -> str:
    _, group = only_resource(tpl, "AWS::AutoScaling::AutoScalingGroup")
    hooks = [h for h in group["Properties"].get("LifecycleHookSpecificationList", [])
             if h.get("LifecycleTransition") == "autoscaling:EC2_INSTANCE_TERMINATING"]
    if not hooks:
        raise CheckFailed("no EC2_INSTANCE_TERMINATING lifecycle hook")
    hook = hooks[0]
    heartbeat = scalar(tpl, hook.get("HeartbeatTimeout", 3600))
    stop = timespan_seconds(unit_settings(UNIT.read_text())["TimeoutStopSec"])
    if hook.get("DefaultResult") != "CONTINUE":
        raise CheckFailed(f"the hook's DefaultResult is {hook.get('DefaultResult')!r}, expected CONTINUE")
    if heartbeat < stop:
        raise CheckFailed(f"HeartbeatTimeout {heartbeat} s is shorter than the unit's stop timeout {stop:g} s")
    # The worker drains before the hook's deadline: it must know it.
    told = re.search(r"^LIFECYCLE_TIMEOUT=(\d+)$", USER_DATA.read_text(), re.MULTILINE)
    if not told or int(told.group(1)) != heartbeat:
        raise CheckFailed(f"the env file's LIFECYCLE_TIMEOUT ({told.group(1) if told else 'unset'}) is not the "
                          f"hook's HeartbeatTimeout {heartbeat} s")
    return (f"HeartbeatTimeout {heartbeat} s >= TimeoutStopSec {stop:g} s, = the worker's LIFECYCLE_TIMEOUT, "
            f"DefaultResult CONTINUE")


def check_embedded(args, tpl) -> str:
    script = USER_DATA.read_text()
    embedded, variables = user_data_sub(tpl)
    problems = []
    if embedded != script:
        diff = difflib.unified_diff(script.splitlines(), embedded.splitlines(),
                                    "deploy/user-data.sh", "cloudformation.yaml UserData", lineterm="", n=1)
        problems.append("the template's user data differs from deploy/user-data.sh "
                        "(deploy/check.py --sync-user-data copies the file in):")
        problems.extend(list(diff)[:40])
    # Only the NAME='${X}' block may hold Fn::Sub variables, so the linted
    # file is the deployed script with the values left out.
    known = set(tpl.get("Parameters", {})) | set(tpl["Resources"]) | set(variables)
    for n, line in enumerate(script.splitlines(), 1):
        for m in re.finditer(r"\$\{([^}]*)\}?", line):
            var = m.group(1)
            if not SUB_ASSIGNMENT.match(line):
                problems.append(f"user-data.sh:{n}: a dollar-brace outside the CloudFormation block: {line.strip()}")
            elif not (var.startswith("AWS::") or var.split(".")[0] in known):
                problems.append(f"user-data.sh:{n}: Fn::Sub has no value for {var}")
    # The units come with the package: the user data writes none, and runs
    # the binary the units run.
    written = [opener for opener, _ in heredocs(script) if ".service" in opener]
    if written:
        problems.append(f"user-data.sh writes a unit ({written}); the package ships them")
    exec_bin = unit_settings(UNIT.read_text()).get("ExecStart", "").split()[0]
    if f"BIN={exec_bin}" not in script:
        problems.append(f"user-data.sh's BIN is not the unit's binary {exec_bin}")
    release = (ROOT / "scripts" / "release.sh").read_text()
    packaged = re.search(r"^for unit in (.*); do$", release, re.M)
    missing = sorted({u.name for u in UNITS} - set(packaged.group(1).split() if packaged else []))
    if missing:
        problems.append(f"scripts/release.sh does not package {', '.join(missing)} (its `for unit in ...` loop)")
    size = len(script.encode()) + len(sub_assignments(script)) * SUB_VALUE_ALLOWANCE
    if size > USER_DATA_LIMIT:
        problems.append(f"user data would be about {size} bytes, over EC2's {USER_DATA_LIMIT}")
    if problems:
        raise CheckFailed("user data, template, units and package are out of step", problems)
    return (f"user-data.sh = the template's user data ({len(script.encode())} bytes, "
            f"{len(sub_assignments(script))} Fn::Sub values); it runs {exec_bin}, the units' binary, "
            f"which the package ships with {', '.join(u.name for u in UNITS)}")


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        raise CheckFailed(f"{name} is not installed (Debian package {package}: apt-get install {package})")
    return path


def check_systemd(args, tpl) -> str:
    tool = need_tool("systemd-analyze", "systemd")
    res = subprocess.run([tool, "verify", *map(str, UNITS)], capture_output=True, text=True)
    # The one acceptable complaint: the binary is not installed on this machine.
    exec_start = unit_settings(UNIT.read_text()).get("ExecStart", "").split()[0]
    names = "|".join(re.escape(u.name) for u in UNITS)
    tolerated = re.compile(rf"^({names}): Command {re.escape(exec_start)} is not executable: "
                           r"No such file or directory$")
    lines = [l for l in (res.stdout + res.stderr).splitlines() if l.strip()]
    others = [l for l in lines if not tolerated.match(l)]
    if others or (res.returncode != 0 and not lines):
        raise CheckFailed(f"systemd-analyze verify exited {res.returncode}", others)
    return f"{', '.join(u.name for u in UNITS)} clean" + (f" (but for: {exec_start} is not installed here)" if lines else "")


def check_shellcheck(args, tpl) -> str:
    tool = need_tool("shellcheck", "shellcheck")
    res = subprocess.run([tool, str(USER_DATA)], capture_output=True, text=True)
    if res.returncode != 0:
        raise CheckFailed(f"shellcheck exited {res.returncode}", (res.stdout + res.stderr).splitlines())
    version = re.search(r"version: (\S+)", subprocess.run([tool, "--version"], capture_output=True, text=True).stdout)
    return f"deploy/user-data.sh clean (shellcheck {version.group(1) if version else '?'})"


def check_boot_fetch(args, tpl) -> str:
    """The set-up script's S3 download, against moto with IAM enforced
    (deploy/boot.py)."""
    if not shutil.which("curl"):
        raise CheckFailed("curl is missing (apt install curl)")
    try:
        with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": str(boot.FREE_CALLS)}) as endpoint:
            return boot.check_package_fetch(endpoint)
    except boot.Failed as e:
        raise CheckFailed(str(e), e.details) from None


def check_cloudwatch(args, tpl) -> str:
    """The CloudWatch agent's configuration against its schema, and every
    metric the agent, the dashboard and the alarms name against what the
    worker exports and this template's resources (deploy/cloudwatch.py)."""
    script = USER_DATA.read_text()
    try:
        return cloudwatch.validate(plain(tpl), script, heredocs(script), sub_assignments(script))
    except cloudwatch.Problems as e:
        raise CheckFailed(e.summary(), e.problems if len(e.problems) > 1 else []) from None


CHECKS = [
    ("cfn-lint", check_cfn_lint),
    ("scaling policy", check_scaling),
    ("worker role vs SDK calls", check_iam),
    ("S3 scope (worker and producer)", check_s3_scope),
    ("group and hook names", check_names),
    ("receive limits", check_receive_limits),
    ("stop timeout vs SHUTDOWN_GRACE", check_stop_timeout),
    ("lifecycle hook vs stop timeout", check_hook_timeout),
    ("user data / template / unit in sync", check_embedded),
    ("systemd-analyze verify", check_systemd),
    ("shellcheck", check_shellcheck),
    ("CloudWatch agent, dashboard and alarms", check_cloudwatch),
    ("user data's package download (curl SigV4, moto IAM)", check_boot_fetch),
    ("queues vs queue-init", check_queue_init),
]


def sync_user_data() -> None:
    """Rewrites the template's user-data block scalar from deploy/user-data.sh."""
    lines = TEMPLATE.read_text().splitlines(keepends=True)
    starts = [i for i, l in enumerate(lines) if re.match(r"^\s*- \|\s*# deploy/user-data\.sh\s*$", l)]
    if len(starts) != 1:
        sys.exit("cannot find the `- |  # deploy/user-data.sh` line in the template")
    start = starts[0]
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) >= indent):
        end += 1
    # Blank lines at the end of the block belong to what follows.
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    body = [(" " * indent + l if l.strip() else "\n") for l in USER_DATA.read_text().splitlines(keepends=True)]
    TEMPLATE.write_text("".join(lines[: start + 1] + body + lines[end:]))
    print(f"copied {USER_DATA.relative_to(ROOT)} into {TEMPLATE.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allow-planned", action="store_true",
                        help="tolerate role actions that are planned but not yet called: " + ", ".join(sorted(PLANNED)))
    parser.add_argument("--sync-user-data", action="store_true",
                        help="copy deploy/user-data.sh into the template's UserData, then exit")
    args = parser.parse_args()
    if args.sync_user_data:
        sync_user_data()
        return 0

    failed = 0
    try:
        tpl = load_template()
    except CheckFailed as e:
        print(f"FAIL template: {e}")
        for d in e.details:
            print(f"    {d}")
        return 1
    for name, check in CHECKS:
        try:
            detail = check(args, tpl)
            print(f"PASS {name}: {detail}", flush=True)
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            for d in e.details:
                print(f"    {d}", flush=True)
    total = len(CHECKS)
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
