"""The Doitong API contract, in one place.

Everything the vendor pages document, and every assumption (marked ``[A]`` in the contract) the
provider, its emulator and its tests build on, is a constant or a pure function here. Where the
real API turns out to differ, this module is the one place to change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# --- Transport (documented) ---------------------------------------------------------------
DEFAULT_BASE_URL = "https://api.doitong.com"
GRAPHQL_PATH = "/graphql"
REST_SUBMIT_PATH = "/v1/text_to_image"
#: [A] A job's status over REST (the client reads jobs through GraphQL; the emulator serves both).
REST_JOB_PATH = "/v1/jobs/{job_id}"
#: [A] The account over REST.
REST_ACCOUNT_PATH = "/v1/account"
GRAPHQL_AUTH_HEADER = "Authorization"
GRAPHQL_AUTH_SCHEME = "Bearer"
REST_AUTH_HEADER = "X-API-Key"

# --- Inputs ---------------------------------------------------------------------------------
PROVIDERS: tuple[str, ...] = ("flux-krea", "flux-dev")
#: [A] ``quality`` values and default.
QUALITIES: tuple[str, ...] = ("standard", "high")
DEFAULT_QUALITY = "standard"
DEFAULT_WIDTH = 1024
DEFAULT_HEIGHT = 1024
#: [A] width and height bounds: integers from 256 to 4096, multiples of 16.
MIN_SIDE = 256
MAX_SIDE = 4096
SIDE_MULTIPLE = 16
#: [A] prompt length after trimming.
PROMPT_MIN_CHARS = 1
PROMPT_MAX_CHARS = 2000
#: [A] the generation type, and ``version`` equals the provider name.
GENERATION_TYPE = "IMAGE"


class JobStatus(str, enum.Enum):
    """[A] A job's lifecycle: ``queued`` -> ``processing`` -> ``completed`` | ``failed``."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    #: A status the client does not know; treated as still running.
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> JobStatus:
        """Read a job's ``status`` field, in any case; anything unknown is :attr:`UNKNOWN` (still running)."""
        try:
            return cls(str(value).lower())
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})


# --- Errors ---------------------------------------------------------------------------------
class ErrorCode(str, enum.Enum):
    """[A] ``extensions.code`` values of the error body."""

    BAD_USER_INPUT = "BAD_USER_INPUT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    RATE_LIMITED = "RATE_LIMITED"
    CONCURRENCY_LIMIT = "CONCURRENCY_LIMIT"
    DAILY_LIMIT = "DAILY_LIMIT"
    NOT_FOUND = "NOT_FOUND"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


#: The HTTP status each code is sent with.
HTTP_STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.BAD_USER_INPUT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.INSUFFICIENT_CREDITS: 402,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.CONCURRENCY_LIMIT: 429,
    ErrorCode.DAILY_LIMIT: 429,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INTERNAL_SERVER_ERROR: 500,
}

# --- Rate limits (documented) ---------------------------------------------------------------
RATE_LIMIT_LIMIT_HEADER = "X-RateLimit-Limit"
RATE_LIMIT_REMAINING_HEADER = "X-RateLimit-Remaining"
#: [A] a Unix time in seconds; clients also accept seconds-until and HTTP dates.
RATE_LIMIT_RESET_HEADER = "X-RateLimit-Reset"
RETRY_AFTER_HEADER = "Retry-After"
#: The requests/minute window.
RATE_LIMIT_WINDOW_SECONDS = 60.0
#: The longest wait a daily limit can ask for (a reset or ``Retry-After`` further ahead is capped).
DAILY_LIMIT_MAX_WAIT_SECONDS = 24 * 3600.0
#: The largest API answer read (JSON of a hundred jobs is a few hundred KiB); a larger one is a
#: protocol error, and reading stops there.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """A plan's limits. ``None`` means unlimited.

    :param requests_per_minute: authenticated requests allowed per window ([A] all of them count).
    :param concurrent_jobs: jobs queued or processing at once.
    :param daily_limit: submissions per UTC day.
    """

    name: str
    requests_per_minute: int
    concurrent_jobs: int
    daily_limit: int | None


PLANS: dict[str, Plan] = {
    "free": Plan("free", 10, 1, 100),
    "starter": Plan("starter", 30, 3, 1_000),
    "pro": Plan("pro", 60, 10, 10_000),
    #: [A] "custom" limits; the emulator gives enterprise these.
    "enterprise": Plan("enterprise", 600, 50, None),
}

# --- Pricing --------------------------------------------------------------------------------
#: [A] flux-krea: up to this many pixels is "standard resolution".
STANDARD_RESOLUTION_MAX_PIXELS = 1024 * 1024
#: [A] flux-krea prices by (high resolution?, quality).
FLUX_KREA_PRICES: dict[tuple[bool, str], int] = {
    (False, "standard"): 10,
    (False, "high"): 20,
    (True, "standard"): 30,
    (True, "high"): 50,
}
#: [A] flux-dev: one price per image.
FLUX_DEV_PRICE = 50
#: [A] a failed job's credits are refunded.
REFUND_FAILED_JOBS = True


def credit_cost(*, provider: str, width: int, height: int, quality: str) -> int:
    """[A] The credits one image costs. The charged ``creditCost`` is the truth; this estimates.

    :param provider: ``flux-krea`` or ``flux-dev``.
    :param quality: ``standard`` or ``high``; flux-dev costs the same for both.
    """
    if provider == "flux-dev":
        return FLUX_DEV_PRICE
    high_resolution = width * height > STANDARD_RESOLUTION_MAX_PIXELS
    return FLUX_KREA_PRICES[(high_resolution, quality)]


# --- Outputs and webhooks -------------------------------------------------------------------
#: [A] result URLs are fetched without auth and may expire after this long.
OUTPUT_URL_TTL_SECONDS = 24 * 3600
#: [A] the hosts output URLs are served from besides the API's own: the vendor's CDN
#: (``cdn.doitong.com`` in the vendor pages) and its siblings. ``*.`` matches any subdomain.
DEFAULT_DOWNLOAD_HOSTS: tuple[str, ...] = ("*.doitong.com",)
SIGNATURE_HEADER = "X-Doitong-Signature"
#: [A] ``sha256=<hex HMAC-SHA256 of the raw body under the account's webhook secret>``.
SIGNATURE_PREFIX = "sha256="

# --- GraphQL schema [A] ----------------------------------------------------------------------
SDL = """
scalar JSON
enum GenerationType { IMAGE }
input GenerateTextInput { text: String! }
input GenerateOptions { width: Int, height: Int, version: String, quality: String }
input GenerateInput { type: GenerationType!, provider: String!, input: GenerateTextInput!,
                      options: GenerateOptions, webhookUrl: String }
input ImageGenerationInput { service: String!, prompt: String!, width: Int, height: Int,
                             version: String, quality: String, webhookUrl: String }
type JobError { code: String!, message: String! }
type Job { id: ID!, status: String!, type: GenerationType!, provider: String!, url: String,
           width: Int, height: Int, metadata: JSON, creditCost: Int, webhookUrl: String,
           duration: Float, error: JobError, createdAt: String!, completedAt: String }
type Account { plan: String!, credits: Int! }
type Query { job(id: ID!): Job, account: Account! }
type Mutation { generate(input: GenerateInput!): Job!,
                generateImage(input: ImageGenerationInput!): Job! }
"""

#: The job fields the client asks for.
JOB_FIELDS = (
    "id status type provider url width height metadata creditCost webhookUrl duration "
    "error { code message } createdAt completedAt"
)

# --- Emulator-facing additions --------------------------------------------------------------
#: The path of a job's output, relative to the output host (``https://cdn.doitong.com`` on the real
#: service, the emulator's own base URL locally).
OUTPUT_PATH = "/outputs/{job_id}.jpg"
#: [A] the ``error.code`` of a job that failed during generation.
JOB_FAILED_ERROR_CODE = "GENERATION_FAILED"
