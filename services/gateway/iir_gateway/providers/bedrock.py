"""AWS Bedrock's Converse API (`{base_url}/model/{modelId}/converse`), every request signed with SigV4
(`upstream.aws_sigv4`, service `bedrock`) after its body is encoded.

Credentials are read per request: a shared credentials file's profile (`bedrock.credentials_file`, INI as
`~/.aws/credentials`), else the variables AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
A Bedrock API key (`api_key_env`/`api_key_file`, e.g. AWS_BEARER_TOKEN_BEDROCK) is sent as a bearer token
instead, unsigned.
"""

from __future__ import annotations

import configparser
import os

from iir_gateway.picking.state import EndpointStates
from iir_gateway.providers.config import ProviderConfig
from iir_gateway.providers.external import ExternalProvider, Route
from iir_gateway.upstream.aws_sigv4 import AwsCredentials, sign
from iir_gateway.upstream.target import CredentialsError

SERVICE = "bedrock"


def load_credentials(credentials_file: str, profile: str) -> AwsCredentials | None:
    """The profile's keys from the shared credentials file, else the environment's; None without both."""
    if credentials_file:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(credentials_file) as file:
                parser.read_file(file)
        except (OSError, configparser.Error):
            return None
        if not parser.has_section(profile):
            return None
        section = parser[profile]
        key_id, secret = section.get("aws_access_key_id", "").strip(), section.get("aws_secret_access_key", "").strip()
        token = section.get("aws_session_token", "").strip()
    else:
        key_id = os.environ.get("AWS_ACCESS_KEY_ID", "").strip()
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "").strip()
        token = os.environ.get("AWS_SESSION_TOKEN", "").strip()
    return AwsCredentials(key_id, secret, token) if key_id and secret else None


class SigV4Auth:
    """Signs each request with the provider's AWS credentials (read when it is signed)."""

    def __init__(self, credentials_file: str, profile: str, region: str) -> None:
        self.credentials_file = credentials_file
        self.profile = profile
        self.region = region

    def credentials(self) -> AwsCredentials | None:
        return load_credentials(self.credentials_file, self.profile)

    async def authorize(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        credentials = self.credentials()
        if credentials is None:
            raise CredentialsError("no AWS credentials")
        signed = {"content-type": headers.get("content-type", "application/json")}
        return sign(method, url, signed, body, credentials, self.region, SERVICE)


class BedrockProvider(ExternalProvider):
    def __init__(self, name: str, config: ProviderConfig, states: EndpointStates) -> None:
        super().__init__(name, config, states)
        options = config.bedrock
        self.signer = SigV4Auth(options.credentials_file, options.profile, options.signing_region())

    def _bearer(self) -> str:
        return self.config.api_key() if (self.config.api_key_env or self.config.api_key_file) else ""

    def missing_credentials(self) -> str:
        if self._bearer() or self.signer.credentials() is not None:
            return ""
        options = self.config.bedrock
        if options.credentials_file:
            return f"the profile [{options.profile}] of the credentials file {options.credentials_file}"
        return "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or bedrock.credentials_file"

    def route(self, model: str) -> Route:
        headers = dict(self.config.headers)
        bearer = self._bearer()  # read per request, so a rotated Secret file takes effect
        if bearer:
            return Route(self.config.base_url, "bedrock", {**headers, "authorization": f"Bearer {bearer}"})
        return Route(self.config.base_url, "bedrock", headers, auth=self.signer)

    def price_table(self, model: str) -> str:
        return "bedrock"  # no built-in prices: set `price` per model
