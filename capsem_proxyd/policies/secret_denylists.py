"""detect-secrets' rules as data: what the Secrets policy takes of Yelp's ``detect-secrets``, without importing it.

Why a copy: importing any ``detect_secrets`` module runs its package's
``__init__``, which imports every plugin, and each plugin ``requests`` (to
verify a secret online, which the proxy never does), ``urllib3`` and
``charset_normalizer``: ~5 MiB of the proxy process's resident memory for a
few dozen regexes and two small checks (the bench's "proxy RSS after load"
target is 80 MiB). So the plugins' ``denylist`` regexes (in their order, with
their flags), the AWS plugin's label words, and the two checks the policy runs
on a match (the sequential-string filter, a JWT's formal validity) are written
here, and ``tests/policy/test_secret_denylists.py`` checks them against the
installed ``detect-secrets`` (pinned below its next minor release): a release
that changes a rule fails it, and ``uv run python -m tests.policy.test_secret_denylists``
prints this table anew.
"""

from __future__ import annotations

import base64
import json
import string
from typing import NamedTuple


class Denylisted(NamedTuple):
    """One regex of a detect-secrets plugin's ``denylist``: the plugin's ``secret_type`` (``kind``), its class
    name, the regex's position in the list, its ``re`` flags and its source."""

    kind: str
    plugin: str
    position: int  # in the plugin's denylist
    flags: int
    pattern: str


# Generated from detect-secrets 1.5.0 (tests/policy/test_secret_denylists.py).
DENYLISTS: tuple[Denylisted, ...] = (
    Denylisted('Artifactory Credentials', 'ArtifactoryDetector', 0, 32,
               '(?:\\s|=|:|"|^)AKC[a-zA-Z0-9]{10,}(?:\\s|"|$)'),
    Denylisted('Artifactory Credentials', 'ArtifactoryDetector', 1, 32,
               '(?:\\s|=|:|"|^)AP[\\dABCDEF][a-zA-Z0-9]{8,}(?:\\s|"|$)'),
    Denylisted('AWS Access Key', 'AWSKeyDetector', 0, 32,
               '(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}'),
    Denylisted('AWS Access Key', 'AWSKeyDetector', 1, 34,
               'aws.{0,20}?(?:key|pwd|pw|password|pass|token).{0,20}?[\\\'\\"]([0-9a-zA-Z/+]{40})[\\\'\\"]'),
    Denylisted('Azure Storage Account access key', 'AzureStorageKeyDetector', 0, 32,
               'AccountKey=[a-zA-Z0-9+\\/=]{88}'),
    Denylisted('Basic Auth Credentials', 'BasicAuthDetector', 0, 32,
               "://[^:/\\?\\#\\[\\]@!\\$\\&'\\(\\)\\*\\+,;=\\s]+:([^:/\\?\\#\\[\\]@!\\$\\&'\\(\\)\\*\\+,;=\\s]+)@"),
    Denylisted('Cloudant Credentials', 'CloudantDetector', 0, 34,
               '(?:(?<=\\W)|(?<=^))(?:\\[|)(?:"|\\\'|)(?:cloudant|cl|clou)(?:_|-|)(?:api|)(?:key|pwd|pw|password|pass|token)(?:"|\\\'|)(?:\\]|)(?: *)(?:=|:|:=|=>| +|::)(?: *)(?:"|\\\'|)([0-9a-f]{64})(?:"|\\\'|)'),
    Denylisted('Cloudant Credentials', 'CloudantDetector', 1, 34,
               '(?:(?<=\\W)|(?<=^))(?:\\[|)(?:"|\\\'|)(?:cloudant|cl|clou)(?:_|-|)(?:api|)(?:key|pwd|pw|password|pass|token)(?:"|\\\'|)(?:\\]|)(?: *)(?:=|:|:=|=>| +|::)(?: *)(?:"|\\\'|)([a-z]{24})(?:"|\\\'|)'),
    Denylisted('Cloudant Credentials', 'CloudantDetector', 2, 34,
               '(?:https?\\:\\/\\/)[\\w\\-]+\\:([0-9a-f]{64})\\@[\\w\\-]+\\.cloudant\\.com'),
    Denylisted('Cloudant Credentials', 'CloudantDetector', 3, 34,
               '(?:https?\\:\\/\\/)[\\w\\-]+\\:([a-z]{24})\\@[\\w\\-]+\\.cloudant\\.com'),
    Denylisted('Discord Bot Token', 'DiscordBotTokenDetector', 0, 32,
               '[MNO][a-zA-Z\\d_-]{23,25}\\.[a-zA-Z\\d_-]{6}\\.[a-zA-Z\\d_-]{27}'),
    Denylisted('GitHub Token', 'GitHubTokenDetector', 0, 32,
               '(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}'),
    Denylisted('GitLab Token', 'GitLabTokenDetector', 0, 32,
               '(glpat|gldt|glft|glsoat|glrt)-[A-Za-z0-9_\\-]{20,50}(?!\\w)'),
    Denylisted('GitLab Token', 'GitLabTokenDetector', 1, 32,
               'GR1348941[A-Za-z0-9_\\-]{20,50}(?!\\w)'),
    Denylisted('GitLab Token', 'GitLabTokenDetector', 2, 32,
               'glcbt-([0-9a-fA-F]{2}_)?[A-Za-z0-9_\\-]{20,50}(?!\\w)'),
    Denylisted('GitLab Token', 'GitLabTokenDetector', 3, 32,
               'glimt-[A-Za-z0-9_\\-]{25}(?!\\w)'),
    Denylisted('GitLab Token', 'GitLabTokenDetector', 4, 32,
               'glptt-[A-Za-z0-9_\\-]{40}(?!\\w)'),
    Denylisted('GitLab Token', 'GitLabTokenDetector', 5, 32,
               'glagent-[A-Za-z0-9_\\-]{50,1024}(?!\\w)'),
    Denylisted('GitLab Token', 'GitLabTokenDetector', 6, 32,
               'gloas-[A-Za-z0-9_\\-]{64}(?!\\w)'),
    Denylisted('IBM Cloud IAM Key', 'IbmCloudIamDetector', 0, 34,
               '(?:(?<=\\W)|(?<=^))(?:\\[|)(?:"|\\\'|)(?:ibm(?:_|-|)cloud(?:_|-|)iam|cloud(?:_|-|)iam|ibm(?:_|-|)cloud|ibm(?:_|-|)iam|ibm|iam|cloud|)(?:_|-|)(?:api|)(?:_|-|)(?:key|pwd|password|pass|token)(?:"|\\\'|)(?:\\]|)(?: *)(?:=|:|:=|=>| +|::)(?: *)(?:"|\\\'|)([a-zA-Z0-9_\\-]{44}(?![a-zA-Z0-9_\\-]))(?:"|\\\'|)'),
    Denylisted('IBM COS HMAC Credentials', 'IbmCosHmacDetector', 0, 34,
               '(?:(?<=\\W)|(?<=^))(?:\\[|)(?:"|\\\'|)(?:(?:ibm)?[-_]?cos[-_]?(?:hmac)?|)(?:_|-|)(?:secret[-_]?(?:access)?[-_]?key)(?:"|\\\'|)(?:\\]|)(?: *)(?:=|:|:=|=>| +|::)(?: *)(?:"|\\\'|)([a-f0-9]{48}(?![a-f0-9]))(?:"|\\\'|)'),
    Denylisted('Public IP (ipv4)', 'IPPublicDetector', 0, 98,
               '\n        (?<![\\w.])         # Negative lookbehind: Ensures no preceding word character or dot\n        (                  # Start of the main capturing group\n            (?!            # Negative lookahead: Ensures the following pattern doesn\'t match\n                192\\.168\\. # Exclude "192.168."\n                |127\\.     # Exclude "127."\n                |10\\.      # Exclude "10."\n                |172\\.(?:1[6-9]|2[0-9]|3[01])   # Exclude "172." with specific ranges\n            )\n            (?:            # Non-capturing group for octets\n                           # Match numbers 0-255 followed by dot, properly handle leading zeros\n                (?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])\\.\n            ){3}           # Repeat for three octets\n                           # Match final octet (0-255), properly handle leading zeros\n            (?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])\n            (?:            # Optional non-capturing group for port number\n                :\\d{1,5}   # Match colon followed by 1 to 5 digits\n            )?\n        )                  # End of the main capturing group\n        (?![\\w.])          # Negative lookahead: Ensures no following word character or dot\n    '),
    Denylisted('JSON Web Token', 'JwtTokenDetector', 0, 32,
               'eyJ[A-Za-z0-9-_=]+\\.[A-Za-z0-9-_=]+\\.?[A-Za-z0-9-_.+/=]*?'),
    Denylisted('Mailchimp Access Key', 'MailchimpDetector', 0, 32,
               '[0-9a-z]{32}-us[0-9]{1,2}'),
    Denylisted('NPM tokens', 'NpmDetector', 0, 32,
               '\\/\\/.+\\/:_authToken=\\s*((npm_.+)|([A-Fa-f0-9-]{36})).*'),
    Denylisted('OpenAI Token', 'OpenAIDetector', 0, 32,
               'sk-[A-Za-z0-9-_]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}'),
    Denylisted('Private Key', 'PrivateKeyDetector', 0, 32,
               'BEGIN DSA PRIVATE KEY'),
    Denylisted('Private Key', 'PrivateKeyDetector', 1, 32,
               'BEGIN EC PRIVATE KEY'),
    Denylisted('Private Key', 'PrivateKeyDetector', 2, 32,
               'BEGIN OPENSSH PRIVATE KEY'),
    Denylisted('Private Key', 'PrivateKeyDetector', 3, 32,
               'BEGIN PGP PRIVATE KEY BLOCK'),
    Denylisted('Private Key', 'PrivateKeyDetector', 4, 32,
               'BEGIN PRIVATE KEY'),
    Denylisted('Private Key', 'PrivateKeyDetector', 5, 32,
               'BEGIN RSA PRIVATE KEY'),
    Denylisted('Private Key', 'PrivateKeyDetector', 6, 32,
               'BEGIN SSH2 ENCRYPTED PRIVATE KEY'),
    Denylisted('Private Key', 'PrivateKeyDetector', 7, 32,
               'PuTTY-User-Key-File-2'),
    Denylisted('PyPI Token', 'PypiTokenDetector', 0, 32,
               'pypi-AgEIcHlwaS5vcmc[A-Za-z0-9-_]{70,}'),
    Denylisted('PyPI Token', 'PypiTokenDetector', 1, 32,
               'pypi-AgENdGVzdC5weXBpLm9yZw[A-Za-z0-9-_]{70,}'),
    Denylisted('SendGrid API Key', 'SendGridDetector', 0, 32,
               'SG\\.[a-zA-Z0-9_-]{22}\\.[a-zA-Z0-9_-]{43}'),
    Denylisted('Slack Token', 'SlackDetector', 0, 34,
               'xox(?:a|b|p|o|s|r)-(?:\\d+-)+[a-z0-9]+'),
    Denylisted('Slack Token', 'SlackDetector', 1, 98,
               'https://hooks\\.slack\\.com/services/T[a-zA-Z0-9_]+/B[a-zA-Z0-9_]+/[a-zA-Z0-9_]+'),
    Denylisted('SoftLayer Credentials', 'SoftlayerDetector', 0, 34,
               '(?:(?<=\\W)|(?<=^))(?:\\[|)(?:"|\\\'|)(?:softlayer|sl)(?:_|-|)(?:api|)(?:_|-|)(?:key|pwd|password|pass|token)(?:"|\\\'|)(?:\\]|)(?: *)(?:=|:|:=|=>| +|::)(?: *)(?:"|\\\'|)([a-z0-9]{64})(?:"|\\\'|)'),
    Denylisted('SoftLayer Credentials', 'SoftlayerDetector', 1, 34,
               '(?:http|https)://api.softlayer.com/soap/(?:v3|v3.1)/([a-z0-9]{64})'),
    Denylisted('Square OAuth Secret', 'SquareOAuthDetector', 0, 32,
               'sq0csp-[0-9A-Za-z\\\\\\-_]{43}'),
    Denylisted('Stripe Access Key', 'StripeDetector', 0, 32,
               '(?:r|s)k_live_[0-9a-zA-Z]{24}'),
    Denylisted('Telegram Bot Token', 'TelegramBotTokenDetector', 0, 32,
               '\\d{8,10}:[0-9A-Za-z_-]{35}'),
    Denylisted('Twilio API Key', 'TwilioKeyDetector', 0, 32,
               'AC[a-z0-9]{32}'),
    Denylisted('Twilio API Key', 'TwilioKeyDetector', 1, 32,
               'SK[a-z0-9]{32}'),
)

# ``AWSKeyDetector.secret_keyword``: the label words before an AWS secret access key.
AWS_SECRET_KEYWORD = '(?:key|pwd|pw|password|pass|token)'

# ``detect_secrets.filters.heuristic.is_sequential_string``'s sequences: a value inside one (``ABCDEF...``,
# ``0123...``) is a placeholder someone typed, never a credential.
_SEQUENCES = (
    string.ascii_uppercase + string.ascii_uppercase + string.digits + "+/",  # base64, letters first
    string.digits + string.ascii_uppercase + string.ascii_uppercase + "+/",  # base64, digits first
    (string.digits + string.ascii_uppercase) * 2,  # alphanumeric
    string.digits * 2,  # digits
    string.hexdigits.upper() + string.hexdigits.upper(),
    string.ascii_uppercase + "=/",
)


def is_sequential_string(secret: str) -> bool:
    """detect-secrets' sequential-string filter: ``secret``, upper-cased, is part of a run of its alphabet."""
    uppercase = secret.upper()
    return any(uppercase in sequence for sequence in _SEQUENCES)


def jwt_formally_valid(token: str) -> bool:
    """detect-secrets' ``JwtTokenDetector.is_formally_valid``: every dot-separated part is URL-safe base64
    (padding added), and the first two decode to JSON."""
    for index, part_text in enumerate(token.split(".")):
        try:
            part = part_text.encode("ascii")
            remainder = len(part) % 4
            if remainder == 1:
                return False  # "Incorrect padding"
            part += {0: b"", 2: b"==", 3: b"==="}[remainder]  # as detect-secrets pads (three for one missing)
            decoded = base64.urlsafe_b64decode(part)
            if index < 2:
                json.loads(decoded.decode("utf-8"))
        except (TypeError, ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
            return False
    return True
