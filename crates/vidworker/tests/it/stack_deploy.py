#!/usr/bin/env python3
"""Deploys deploy/cloudformation.yaml into a moto server for the test
`stack_deploy.rs`, and prints one JSON object on stdout: what the stack
made, what moto did not make or lost, and the credentials of each identity.

    stack_deploy.py --endpoint URL --template PATH --database-url URL --stack NAME

In order:
1. what the template needs first: a VPC with two subnets, an AMI (one of
   moto's own), and the Secrets Manager secret holding the database's URL;
2. CreateStack with the template unchanged, waiting for CREATE_COMPLETE;
3. the template's resources (conditions evaluated) against the stack's:
   moto lists a resource type it cannot make as a nameless CREATE_COMPLETE
   entry, so only a logical id counts as made;
4. each property of each made resource read back through the service's
   own API and compared with the template's value (intrinsics resolved);
5. the workarounds moto needs, each reported;
6. the identities: an admin user (Action "*"), the stack's WorkerRole and a
   platform role with the stack's ProducerPolicy, each assumed via STS;
7. IAM enforcement switched on (POST /moto-api/reset-auth with body "0",
   a number: moto parses the raw body with float()); from then on every
   call is signed and authorised against the caller's policies;
8. the worker's calls that moto authorises against Resource "*" instead of
   the resource named in the call, probed with the worker's credentials and
   evaluated with moto's own policy evaluator against the real ARN.

Needs boto3 and moto[cloudformation] (the venv of crates/testkit).
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import re
import sys
import time
import urllib.request

import boto3
from botocore.exceptions import ClientError

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ANY_SHA256 = "0" * 64
NO_VALUE = object()  # AWS::NoValue


class Aws:
    """boto3 clients for one moto endpoint and one set of credentials."""

    def __init__(self, endpoint: str, key: str = "test", secret: str = "test", token: str | None = None):
        self.endpoint = endpoint
        self.creds = dict(aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token)

    def __call__(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **self.creds)


# --- 1. prerequisites ---------------------------------------------------------

def prerequisites(aws: Aws, database_url: str) -> dict[str, str]:
    """The parameters without a default, with values moto accepts."""
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"]
        for i, az in ((1, "a"), (2, "b"))
    ]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    secret = aws("secretsmanager").create_secret(Name="vidworker/database", SecretString=database_url)["ARN"]
    return {
        "VpcId": vpc,
        "SubnetIds": ",".join(subnets),
        "DatabaseCidr": "10.20.9.0/24",
        "DatabaseSecretArn": secret,
        "PackageUri": "s3://vidworker-artifacts/vidworker/vidworker_0.1.0_amd64.deb",
        "PackageSha256": ANY_SHA256,
        "ImageId": image,
        "CloudWatchAgentSha256": ANY_SHA256,
        "SsmAgentVersion": "3.3.1142.0",
        "SsmAgentSha256": ANY_SHA256,
    }


# --- 2. the stack ---------------------------------------------------------------

def deploy(aws: Aws, body: str, stack: str, params: dict[str, str]) -> tuple[dict, float]:
    cfn = aws("cloudformation")
    started = time.monotonic()
    cfn.create_stack(
        StackName=stack,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    while True:
        found = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        if not found["StackStatus"].endswith("_IN_PROGRESS"):
            break
        if time.monotonic() - started > 60:
            sys.exit(f"stack {stack} still {found['StackStatus']} after 60 s")
        time.sleep(0.2)
    if found["StackStatus"] != "CREATE_COMPLETE":
        events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
        sys.exit(f"stack {stack}: {found['StackStatus']} ({found.get('StackStatusReason')}); events: {events}")
    return found, time.monotonic() - started


# --- 3. resources -------------------------------------------------------------------

class Template:
    """The parsed template, its parameters' values and the stack's resources,
    enough to resolve the intrinsic functions it uses."""

    def __init__(self, tpl: dict, params: dict[str, str], stack: str, physical: dict[str, str], aws: Aws):
        self.tpl, self.stack, self.physical, self.aws = tpl, stack, physical, aws
        self.params = {k: params.get(k, p.get("Default")) for k, p in tpl["Parameters"].items()}
        for k, p in tpl["Parameters"].items():
            if p["Type"].startswith("List<") or p["Type"] == "CommaDelimitedList":
                self.params[k] = self.params[k].split(",")
        self.conditions: dict[str, bool] = {}
        for name in tpl.get("Conditions", {}):
            self.condition(name)

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.tpl["Conditions"][name]))
        return self.conditions[name]

    def pseudo(self, name: str):
        return {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
                "AWS::StackName": self.stack, "AWS::NoValue": NO_VALUE}[name]

    def ref(self, name: str):
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.params:
            return self.params[name]
        return self.physical[name]

    def getatt(self, logical: str, attr: str) -> str:
        kind, phys = self.tpl["Resources"][logical]["Type"], self.physical[logical]
        match (kind, attr):
            case ("AWS::S3::Bucket", "Arn"):
                return f"arn:aws:s3:::{phys}"
            case ("AWS::SQS::Queue", "Arn"):
                return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{phys.rsplit('/', 1)[1]}"
            case ("AWS::SQS::Queue", "QueueName"):
                return phys.rsplit("/", 1)[1]
            case ("AWS::IAM::Role", "Arn"):
                return f"arn:aws:iam::{ACCOUNT}:role/{phys}"
            case ("AWS::IAM::InstanceProfile", "Arn"):
                return f"arn:aws:iam::{ACCOUNT}:instance-profile/{phys}"
            case ("AWS::EC2::SecurityGroup", "GroupId"):
                return phys
            case ("AWS::EC2::LaunchTemplate", "LatestVersionNumber"):
                lts = self.aws("ec2").describe_launch_templates(LaunchTemplateIds=[phys])["LaunchTemplates"]
                return str(lts[0]["LatestVersionNumber"])
        raise KeyError(f"Fn::GetAtt {logical}.{attr} ({kind}) is not resolved here")

    def sub(self, text: str, extra: dict) -> str:
        def one(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in extra:
                return str(self.resolve(extra[name]))
            if "." in name and not name.startswith("AWS::"):
                return self.getatt(*name.split(".", 1))
            return str(self.ref(name))
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, value):
        """The value with every intrinsic function CloudFormation would evaluate."""
        if isinstance(value, list):
            return [v for v in (self.resolve(x) for x in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (fn, arg), = value.items()
            match fn:
                case "Ref":
                    return self.ref(arg)
                case "Fn::GetAtt":
                    return self.getatt(*(arg if isinstance(arg, list) else arg.split(".", 1)))
                case "Fn::Sub":
                    text, extra = (arg, {}) if isinstance(arg, str) else arg
                    return self.sub(text, extra)
                case "Fn::If":
                    return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
                case "Fn::Equals":
                    a, b = self.resolve(arg)
                    return str(a) == str(b)
                case "Fn::Not":
                    return not self.resolve(arg[0])
                case "Fn::And":
                    return all(self.resolve(arg))
                case "Fn::Or":
                    return any(self.resolve(arg))
                case "Condition":
                    return self.condition(arg)
                case "Fn::Select":
                    return self.resolve(arg[1])[int(self.resolve(arg[0]))]
                case "Fn::Split":
                    return self.resolve(arg[1]).split(arg[0])
                case "Fn::Join":
                    return arg[0].join(str(v) for v in self.resolve(arg[1]))
                case "Fn::Base64":
                    return base64.b64encode(self.resolve(arg).encode()).decode()
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}


def compare_resources(tpl: dict, params: dict, stack: str, aws: Aws) -> tuple[Template, dict]:
    listed = aws("cloudformation").describe_stack_resources(StackName=stack)["StackResources"]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in listed if r.get("LogicalResourceId")}
    t = Template(tpl, params, stack, physical, aws)
    made, not_made, off = [], [], []
    for logical, res in tpl["Resources"].items():
        entry = {"logical_id": logical, "type": res["Type"]}
        if "Condition" in res and not t.condition(res["Condition"]):
            off.append({**entry, "condition": res["Condition"]})
        elif logical in physical:
            made.append({**entry, "physical_id": physical[logical]})
        else:
            not_made.append(entry)
    nameless = sum(1 for r in listed if not r.get("LogicalResourceId"))
    return t, {"made": made, "not_made": not_made, "condition_false": off, "nameless_entries": nameless}


# --- 4. properties read back --------------------------------------------------------

def _or_none(call):
    try:
        return call()
    except ClientError:
        return None


def _policy_doc(doc):
    """moto returns a CloudFormation-made inline policy as a Python repr."""
    return ast.literal_eval(doc) if isinstance(doc, str) else doc


def _rules(perms: list[dict]) -> list[dict]:
    return [
        {"IpProtocol": p["IpProtocol"], **({"FromPort": p["FromPort"], "ToPort": p["ToPort"]} if "FromPort" in p else {}),
         "CidrIp": r["CidrIp"], **({"Description": r["Description"]} if "Description" in r else {})}
        for p in perms for r in p.get("IpRanges", [])
    ]


def bucket(aws, name):
    s3 = aws("s3")
    enc = _or_none(lambda: s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"])
    own = _or_none(lambda: s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"])
    life = _or_none(lambda: s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"])
    return {
        "BucketEncryption": enc and {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": r["ApplyServerSideEncryptionByDefault"]} for r in enc["Rules"]]},
        "PublicAccessBlockConfiguration": _or_none(
            lambda: s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]),
        "OwnershipControls": own,
        "VersioningConfiguration": {"Status": s3.get_bucket_versioning(Bucket=name).get("Status")},
        "LifecycleConfiguration": life and {"Rules": life},
    }


def queue(aws, url):
    a = aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    keep = ("MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds", "VisibilityTimeout", "SqsManagedSseEnabled")
    return {"QueueName": url.rsplit("/", 1)[1], **{k: a.get(k) for k in keep},
            **{k: json.loads(a[k]) if k in a else None for k in ("RedrivePolicy", "RedriveAllowPolicy")}}


def topic(aws, arn):
    a = aws("sns").get_topic_attributes(TopicArn=arn)["Attributes"]
    return {"TopicName": arn.rsplit(":", 1)[1], "DisplayName": a.get("DisplayName")}


def role(aws, name):
    iam = aws("iam")
    r = iam.get_role(RoleName=name)["Role"]
    return {
        "Description": r.get("Description"),
        "AssumeRolePolicyDocument": _policy_doc(r["AssumeRolePolicyDocument"]),
        "ManagedPolicyArns": [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]],
        "Policies": [{"PolicyName": n, "PolicyDocument": _policy_doc(
            iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"])}
            for n in iam.list_role_policies(RoleName=name)["PolicyNames"]],
    }


def managed_policy(aws, arn):
    iam = aws("iam")
    p = iam.get_policy(PolicyArn=arn)["Policy"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=p["DefaultVersionId"])["PolicyVersion"]["Document"]
    return {"Description": p.get("Description"), "PolicyDocument": _policy_doc(doc)}


def instance_profile(aws, name):
    p = aws("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    return {"Roles": [r["RoleName"] for r in p["Roles"]]}


def log_group(aws, name):
    g = aws("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"][0]
    return {"LogGroupName": g["logGroupName"], "RetentionInDays": g.get("retentionInDays")}


def security_group(aws, gid):
    g = aws("ec2").describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    return {"GroupDescription": g["Description"], "VpcId": g["VpcId"],
            "SecurityGroupEgress": _rules(g["IpPermissionsEgress"]), "SecurityGroupIngress": _rules(g["IpPermissions"])}


def launch_template(aws, lt_id):
    ec2 = aws("ec2")
    lt = ec2.describe_launch_templates(LaunchTemplateIds=[lt_id])["LaunchTemplates"][0]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Latest"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    return {"LaunchTemplateName": lt["LaunchTemplateName"],
            **{f"LaunchTemplateData.{k}": v for k, v in data.items()}}


def group(aws, name):
    asg = aws("autoscaling")
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    hooks = asg.describe_lifecycle_hooks(AutoScalingGroupName=name)["LifecycleHooks"]
    return {
        **{k: g.get(k) for k in ("AutoScalingGroupName", "MinSize", "MaxSize", "LaunchTemplate",
                                  "HealthCheckType", "HealthCheckGracePeriod", "DefaultInstanceWarmup")},
        "VPCZoneIdentifier": sorted(g["VPCZoneIdentifier"].split(",")),
        "MetricsCollection": [{"Granularity": g["EnabledMetrics"][0]["Granularity"],
                               "Metrics": [m["Metric"] for m in g["EnabledMetrics"]]}] if g["EnabledMetrics"] else [],
        "LifecycleHookSpecificationList": hooks,
        "Tags": [{k: t[k] for k in ("Key", "Value", "PropagateAtLaunch")} for t in g["Tags"]
                 if not t["Key"].startswith("aws:")],
    }


def dashboard(aws, name):
    d = aws("cloudwatch").get_dashboard(DashboardName=name)
    return {"DashboardName": d["DashboardName"], "DashboardBody": json.loads(d["DashboardBody"])}


READERS = {
    "AWS::S3::Bucket": bucket, "AWS::SQS::Queue": queue, "AWS::SNS::Topic": topic, "AWS::IAM::Role": role,
    "AWS::IAM::ManagedPolicy": managed_policy, "AWS::IAM::InstanceProfile": instance_profile,
    "AWS::Logs::LogGroup": log_group, "AWS::EC2::SecurityGroup": security_group,
    "AWS::EC2::LaunchTemplate": launch_template, "AWS::AutoScaling::AutoScalingGroup": group,
    "AWS::CloudWatch::Dashboard": dashboard,
}


def same(actual, expected) -> bool:
    """Whether the read-back value holds the template's: every key the template
    gives (extra keys the API adds are fine), lists of equal length, scalars
    equal as text (the APIs return numbers and booleans as strings)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(same(actual.get(k), v) for k, v in expected.items())
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return False
        return all(any(same(a, e) for a in actual) for e in expected)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return str(actual).lower() == str(expected).lower()
    return actual is not None and str(actual) == str(expected)


def expected_properties(t: Template, res: dict) -> dict:
    props = t.resolve(res.get("Properties", {}))
    if res["Type"] == "AWS::EC2::LaunchTemplate":
        data = props.pop("LaunchTemplateData", {})
        props.update({f"LaunchTemplateData.{k}": v for k, v in data.items()})
    if res["Type"] == "AWS::AutoScaling::AutoScalingGroup":
        props["VPCZoneIdentifier"] = sorted(props.get("VPCZoneIdentifier", []))
        props["LifecycleHookSpecificationList"] = [
            {**h, "AutoScalingGroupName": props["AutoScalingGroupName"]}
            for h in props.get("LifecycleHookSpecificationList", [])]
    if res["Type"] == "AWS::CloudWatch::Dashboard":
        props["DashboardBody"] = json.loads(props["DashboardBody"])
    if res["Type"] == "AWS::EC2::SecurityGroup":
        props.setdefault("SecurityGroupIngress", [])
    return props


def read_back(t: Template, made: list[dict], aws: Aws) -> list[dict]:
    rows = []
    for r in made:
        res = t.tpl["Resources"][r["logical_id"]]
        reader = READERS.get(r["type"])
        actual = reader(aws, r["physical_id"]) if reader else {}
        for prop, want in expected_properties(t, res).items():
            row = {"logical_id": r["logical_id"], "type": r["type"], "property": prop}
            if reader is None or prop not in actual:
                rows.append({**row, "state": "not_checked", "detail": "no read-back for this property here"})
            elif same(actual[prop], want):
                rows.append({**row, "state": "kept", "detail": ""})
            else:
                got = json.dumps(actual[prop], default=str)
                rows.append({**row, "state": "lost", "detail": f"moto has {got[:160]}"})
        for attr in ("CreationPolicy", "UpdatePolicy", "DeletionPolicy", "UpdateReplacePolicy"):
            if attr in res:
                rows.append({"logical_id": r["logical_id"], "type": r["type"], "property": attr,
                             "state": "attribute", "detail": json.dumps(t.resolve(res[attr]))})
    return rows


# --- 5. workarounds --------------------------------------------------------------------

def restore_inline_policies(aws: Aws, role_name: str) -> list[str]:
    """moto keeps an inline policy made by CloudFormation as a dict, which its
    IAM enforcement cannot read (KeyError 'policy_document' in
    moto/iam/access_control.py, HTTP 500 on every call of the role). Putting
    the same document back through iam:PutRolePolicy stores it as JSON text."""
    iam = aws("iam")
    done = []
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        raw = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        if isinstance(raw, str):
            iam.put_role_policy(RoleName=role_name, PolicyName=name, PolicyDocument=json.dumps(_policy_doc(raw)))
            done.append(
                f"re-put inline policy {name!r} of {role_name} unchanged through iam:PutRolePolicy: moto stores a "
                "CloudFormation-made inline policy as a Python dict, and its IAM enforcement then fails every "
                "call of the role with HTTP 500 (KeyError 'policy_document', moto/iam/access_control.py)")
    return done


# --- 6. identities ------------------------------------------------------------------------

def identities(aws: Aws, outputs: dict) -> dict:
    iam, sts = aws("iam"), aws("sts")
    iam.create_user(UserName="test-admin")
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="test-admin", PolicyName="everything", PolicyDocument=json.dumps(everything))
    key = iam.create_access_key(UserName="test-admin")["AccessKey"]
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}
    platform = iam.create_role(RoleName="platform-api", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.attach_role_policy(RoleName="platform-api", PolicyArn=outputs["ProducerPolicyArn"])

    def assume(arn: str, session: str) -> dict:
        c = sts.assume_role(RoleArn=arn, RoleSessionName=session)["Credentials"]
        return {"key": c["AccessKeyId"], "secret": c["SecretAccessKey"], "token": c["SessionToken"]}

    return {
        "admin": {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"], "token": None},
        # STS would check the role's trust policy (ec2.amazonaws.com); moto does not before enforcement.
        "worker": assume(outputs["WorkerRoleArn"], "i-0123456789abcdef0"),
        "producer": assume(platform, "platform-api"),
    }


# --- 7 and 8. enforcement, and what moto cannot authorise ------------------------------------

def enforce(endpoint: str) -> None:
    req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        json.load(answer)


def resource_star_checks(aws: Aws, worker: dict, outputs: dict, secret_arn: str, role_name: str) -> list[dict]:
    """The worker's calls that moto authorises against Resource "*" instead
    of the resource AWS names, so that a statement naming one queue, topic
    or secret never matches. Each is probed with the worker's credentials
    and evaluated by moto's own IAMPolicy against the resource AWS would
    authorise."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    iam = aws("iam")
    docs = [json.dumps(_policy_doc(iam.get_role_policy(RoleName=role_name, PolicyName=n)["PolicyDocument"]))
            for n in iam.list_role_policies(RoleName=role_name)["PolicyNames"]]
    role = Aws(aws.endpoint, worker["key"], worker["secret"], worker["token"])
    dlq = outputs["DeadLetterQueueArn"]
    calls = [
        ("sqs:GetQueueUrl", dlq, "moto's SQS takes the queue from QueueUrl or the path; GetQueueUrl names it by "
         "QueueName (moto/sqs/responses.py _get_queue_name)",
         lambda: role("sqs").get_queue_url(QueueName=dlq.rsplit(":", 1)[1])),
        ("sns:Publish", outputs["EventsTopicArn"], "moto's SNS responses have no _determine_resource",
         lambda: role("sns").publish(TopicArn=outputs["EventsTopicArn"], Message="{}")),
        ("secretsmanager:GetSecretValue", secret_arn, "moto's Secrets Manager responses have no _determine_resource",
         lambda: role("secretsmanager").get_secret_value(SecretId=secret_arn)),
    ]
    found = []
    for action, arn, why, call in calls:
        try:
            call()
            live = "allowed"
        except ClientError as e:
            # moto answers a refused JSON-protocol call in XML: boto3 sees only the status.
            code = re.search(r"<Code>(\w+)</Code>", str(e))
            live = code.group(1) if code else e.response["Error"]["Code"]
        found.append({
            "action": action, "resource": arn, "why": why, "live_with_worker_credentials": live,
            "policy_on_the_resource": any(
                IAMPolicy(d).is_action_permitted(action, arn) == PermissionResult.PERMITTED for d in docs),
            "policy_on_star": any(IAMPolicy(d).is_action_permitted(action, "*") == PermissionResult.PERMITTED
                                  for d in docs),
        })
    return found


# The worker cannot start without finding its dead-letter queue.
SHIM_ACTIONS = ("sqs:GetQueueUrl",)


def shim(aws: Aws, role_name: str, checks: list[dict]) -> list[str]:
    """Grants, on Resource "*", the calls of SHIM_ACTIONS that moto refused
    although the role's policy grants them on the resource AWS names: only
    what the worker cannot start without. Its own inline policy, reported."""
    actions = [c["action"] for c in checks
               if c["action"] in SHIM_ACTIONS and c["live_with_worker_credentials"] != "allowed"
               and c["policy_on_the_resource"]]
    for c in checks:
        c["shimmed"] = c["action"] in actions
    if not actions:
        return []
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    aws("iam").put_role_policy(RoleName=role_name, PolicyName="moto-shim", PolicyDocument=json.dumps(doc))
    return [f"added inline policy 'moto-shim' to {role_name}: {', '.join(actions)} on Resource \"*\" (moto refused "
            "it although the role's policy grants it on the dead-letter queue's ARN; the worker cannot start without it)"]


def managed_policy_services(arns: list[str]) -> dict[str, list[str]]:
    """The services of each AWS managed policy's actions, from moto's copy of them."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    data = json.loads(aws_managed_policies_data)
    services = {}
    for arn in arns:
        statements = data[arn.rsplit("/", 1)[1]]["Document"]["Statement"]
        actions = [a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
        services[arn] = sorted({a.split(":")[0] for a in actions})
    return services


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--template", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--stack", required=True)
    args = ap.parse_args()
    from cfnlint.decode import decode_str

    try:
        import moto.cloudformation.models  # noqa: F401
    except ImportError as e:
        sys.exit(f"moto's CloudFormation does not load ({e}): the venv needs moto[cloudformation] "
                 "(.venv/bin/pip install 'moto[cloudformation]==5.2.5')")
    body = open(args.template, encoding="utf-8").read()
    tpl, problems = decode_str(body)
    if problems or tpl is None:
        sys.exit(f"{args.template} does not parse: {problems}")
    aws = Aws(args.endpoint)
    params = prerequisites(aws, args.database_url)
    found, seconds = deploy(aws, body, args.stack, params)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
    t, resources = compare_resources(tpl, params, args.stack, aws)
    properties = read_back(t, resources["made"], aws)
    role_name = outputs["WorkerRoleArn"].rsplit("/", 1)[1]
    workarounds = restore_inline_policies(aws, role_name)
    ids = identities(aws, outputs)
    enforce(args.endpoint)
    admin = Aws(args.endpoint, ids["admin"]["key"], ids["admin"]["secret"])
    star = resource_star_checks(admin, ids["worker"], outputs, params["DatabaseSecretArn"], role_name)
    workarounds += shim(admin, role_name, star)
    managed = t.resolve(tpl["Resources"]["WorkerRole"]["Properties"].get("ManagedPolicyArns", []))
    import moto

    json.dump({
        "moto_version": moto.__version__, "stack_status": found["StackStatus"],
        "create_seconds": round(seconds, 2), "outputs": outputs,
        "parameters": params, "resources": resources, "properties": properties, "workarounds": workarounds,
        "credentials": ids,
        "resource_star": star,
        "managed_policy_services": managed_policy_services(managed),
    }, sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main()
