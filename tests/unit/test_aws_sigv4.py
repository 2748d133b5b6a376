"""The SigV4 signer against AWS's published Signature Version 4 test suite (credentials AKIDEXAMPLE, region
us-east-1, service `service`, 2015-08-30T12:36:00Z), and the rules Bedrock's requests rely on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from iir_gateway.upstream.aws_sigv4 import AwsCredentials, canonical_request, host_of, sign

SUITE = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
AT = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
SCOPE = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date"


@pytest.mark.parametrize(
    ("name", "method", "url", "signature"),
    [
        (
            "get-vanilla",
            "GET",
            "https://example.amazonaws.com/",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "post-vanilla",
            "POST",
            "https://example.amazonaws.com/",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
    ],
)
def test_the_aws_test_suite(name: str, method: str, url: str, signature: str) -> None:
    headers = sign(method, url, {}, b"", SUITE, "us-east-1", "service", AT)
    assert headers["x-amz-date"] == "20150830T123600Z"
    assert headers["authorization"] == f"AWS4-HMAC-SHA256 {SCOPE}, Signature={signature}", name


def test_get_vanilla_canonical_request() -> None:
    request = canonical_request(
        "GET",
        "https://example.amazonaws.com/",
        {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z"},
        ["host", "x-amz-date"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    )
    assert request == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_paths_are_encoded_twice_and_session_tokens_signed() -> None:
    url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-v1%3A0/converse"
    request = canonical_request("POST", url, {"host": "h"}, ["host"], "x")
    assert request.splitlines()[1] == "/model/anthropic.claude-v1%253A0/converse"
    temporary = AwsCredentials("ASIAEXAMPLE", "secret", "session-token")
    headers = sign("POST", url, {"content-type": "application/json"}, b"{}", temporary, "us-east-1", "bedrock", AT)
    assert headers["x-amz-security-token"] == "session-token"
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token," in headers["authorization"]
    assert "secret" not in repr(temporary)


def test_the_host_header_is_the_clients() -> None:
    assert (
        host_of("https://bedrock-runtime.eu-west-1.amazonaws.com/model/x") == "bedrock-runtime.eu-west-1.amazonaws.com"
    )
    assert host_of("http://127.0.0.1:8123/model/x") == "127.0.0.1:8123"
    assert host_of("https://example.com:443/") == "example.com"
