"""AWS credentials block, shared by the S3, ACM and Secrets Manager targets.

Modelled on prefect-aws's ``AwsCredentials``: every field optional so that boto3's own
chain (environment, profile, instance role) applies when nothing is set; the secret is
unwrapped in one method only, ``get_boto3_session``; clients come from ``get_client``.
``endpoint_url`` points every client at moto, LocalStack or a VPC endpoint.

``aws_errors`` turns botocore failures into one line a user can act on: the AWS error
code first (``AccessDenied``, ``NoSuchBucket``, ``ResourceNotFoundException``), then
AWS's message with any PEM block cut out, so key text can never reach a log through
an error message.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator

import boto3
import botocore.loaders
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

_XML_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{0,500})</Message>")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.DOTALL)


class AwsCredentials(Block):
    _block_type_name = "certfleet AWS credentials"
    _block_type_slug = "certfleet-aws-credentials"
    _description = "How certfleet reaches AWS: region, optional keys or profile, optional endpoint."

    region_name: str | None = Field(None, description="AWS region, e.g. 'eu-west-1'; boto3's default applies when unset")
    aws_access_key_id: str | None = Field(None, description="Access key ID; leave unset to use boto3's credential chain (env, profile, instance role)")
    aws_secret_access_key: SecretStr | None = Field(None, description="Secret access key paired with aws_access_key_id")
    aws_session_token: SecretStr | None = Field(None, description="Session token for temporary (STS) credentials")
    profile_name: str | None = Field(None, description="Named profile from ~/.aws/config to use instead of explicit keys")
    endpoint_url: str | None = Field(None, description="Send every request here instead of AWS: moto, LocalStack, or a VPC endpoint URL")

    def get_boto3_session(self) -> boto3.Session:
        """The one place the secret leaves its SecretStr, straight into boto3."""
        secret = self.aws_secret_access_key.get_secret_value() if self.aws_secret_access_key else None
        token = self.aws_session_token.get_secret_value() if self.aws_session_token else None
        return boto3.Session(
            botocore_session=_botocore_session(),
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            profile_name=self.profile_name,
            region_name=self.region_name,
        )

    def get_client(self, service: str):
        """A boto3 client for ``service`` ("s3", "acm", ...) honouring ``endpoint_url``."""
        return self.get_boto3_session().client(service, endpoint_url=self.endpoint_url)


@functools.cache
def _shared_loader() -> botocore.loaders.Loader:
    """One botocore data loader per process: it caches the parsed service models.

    A fresh boto3 Session parses endpoints.json and the service's model again (~0.4 s
    of JSON per client); blocks build a client per call, so sharing the loader (whose
    cache is read-only once filled) keeps a deploy at network speed.
    """
    return botocore.loaders.create_loader(os.environ.get("AWS_DATA_PATH"))


def _botocore_session() -> botocore.session.Session:
    session = botocore.session.get_session()
    session.register_component("data_loader", _shared_loader())
    return session


def _code_and_message(exc: BaseException) -> tuple[str, str]:
    if not isinstance(exc, ClientError):
        return type(exc).__name__, str(exc)
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code") or "ClientError"), str(error.get("Message") or "")
    if code.isdigit():
        # botocore could not parse the body (a proxy's page, or moto's XML error for a
        # JSON service): keep the status, and the <Code>/<Message> if the body has them.
        found = _XML_CODE.search(message)
        detail = _XML_MESSAGE.search(message)
        code = found.group(1) if found else code
        message = detail.group(1) if detail else message[:200]
    return code, message


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('NoSuchKey'), else the exception's class name."""
    return _code_and_message(exc)[0]


def explain(exc: BaseException) -> str:
    """'AccessDenied: Access Denied' — the code, then the message with PEM text removed."""
    code, message = _code_and_message(exc)
    code = f"HTTP {code}" if code.isdigit() else code
    message = _PEM.sub("<pem redacted>", message).strip()
    return f"{code}: {message}" if message else code


@contextlib.contextmanager
def aws_errors(label: str, action: str, error: type[Exception]) -> Iterator[None]:
    """Re-raise botocore failures as ``error("<label>: <action>: <Code>: <message>")``.

    ``from None`` drops the botocore traceback: it adds nothing the code does not say,
    and a traceback printed with locals could show request parameters.
    """
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise error(f"{label}: {action}: {explain(exc)}") from None
