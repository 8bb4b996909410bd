//! Reason codes: the closed set of reasons a request can be refused, and the one
//! table that maps each to its status, stable code string and default message.
//!
//! Everything that talks about a denial (the response body, the decision log,
//! `explain`, metrics) names it through this enum, so the strings never drift.

use std::fmt;

/// The pipeline stage that produced a decision. Stages run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Stage 1: parse and normalise the request target and headers.
    Parse,
    /// Stage 2: the client address, through trusted proxies.
    Client,
    /// Stage 3: IP allow and deny lists and country rules (global, and the
    /// route's after stage 7), then bans (checked by the front door).
    Network,
    /// Stage 4: rate limits (the front door counts; the engine keys).
    RateLimit,
    /// Stage 6: User-Agent and request rules.
    Rules,
    /// Stage 7: match the canonical path against the route table.
    Route,
    /// Stage 8: verify the credential the route asks for.
    Authenticate,
    /// Stage 9: scopes and the Cedar policy.
    Authorize,
    /// Stage 10: the upstream, the static file server or the transport to them.
    Forward,
}

impl Stage {
    /// The stable name used in logs and `explain`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Client => "client",
            Stage::Network => "network",
            Stage::RateLimit => "rate_limit",
            Stage::Rules => "rules",
            Stage::Route => "route",
            Stage::Authenticate => "authenticate",
            Stage::Authorize => "authorize",
            Stage::Forward => "forward",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was refused. Closed: adding a reason means adding a row to
/// [`ReasonCode::info`], which is the only place statuses are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// The path is malformed or could be read more than one way.
    InvalidPath,
    /// The request is malformed in a way that is not about the path
    /// (duplicate `Authorization`, two credentials, bad `Host`).
    InvalidRequest,
    /// No route matches the path (also the face of every concealed denial).
    NotFound,
    /// The path is routed, but not for this method.
    MethodNotAllowed,
    /// The route needs an identity and none was presented.
    AuthenticationRequired,
    /// A bearer token was presented but is not acceptable.
    InvalidToken,
    /// An API key was presented but is not known.
    InvalidApiKey,
    /// The caller is known but its token lacks an OAuth scope the route needs.
    InsufficientScope,
    /// The policy did not permit the request (no permit applied, or a forbid did).
    AccessDenied,
    /// A policy could not be evaluated for this request; refused to fail closed.
    PolicyError,
    /// A trusted proxy's forwarding header names a client address that is
    /// malformed or not canonical.
    InvalidClientAddress,
    /// The client address is in a deny list, or in no allow list.
    IpBlocked,
    /// The client's country is refused (or unknown where that refuses).
    GeoBlocked,
    /// The client is under a timed ban.
    Banned,
    /// A rule on the User-Agent alone matched.
    UserAgentBlocked,
    /// A request rule matched.
    RequestBlocked,
    /// A rate limit is exhausted.
    RateLimited,
    /// A fail-closed rate limit's store cannot be reached.
    RateLimiterUnavailable,
    /// The request target is longer than the server accepts.
    UriTooLong,
    /// The request line and headers are too large or too many.
    HeadersTooLarge,
    /// The request body is larger than the route accepts.
    PayloadTooLarge,
    /// `Content-Length` and `Transfer-Encoding` are missing, duplicated,
    /// malformed or both present: the body's end could be read two ways.
    InvalidFraming,
    /// The static file server found a folder without an index, and listing is off.
    DirectoryListingDisabled,
    /// The static file server cannot read the file.
    FileNotReadable,
    /// The upstream refused or reset the connection.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The gateway is at its connection limit.
    Overloaded,
    /// The static file server cannot serve the requested byte range.
    RangeNotSatisfiable,
    /// The client closed the connection before the answer (logged only;
    /// nobody is left to receive it).
    ClientClosedRequest,
}

/// One row of the reason table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonInfo {
    /// The HTTP status the client receives.
    pub status: u16,
    /// The stable machine code, used when no operator-written code overrides it.
    pub code: &'static str,
    /// The default client-facing message.
    pub message: &'static str,
}

impl ReasonCode {
    /// The one table from reasons to statuses, codes and default messages.
    pub const fn info(self) -> ReasonInfo {
        let (status, code, message) = match self {
            ReasonCode::InvalidPath => (
                400,
                "InvalidPath",
                "The request path is malformed or ambiguous.",
            ),
            ReasonCode::InvalidRequest => (400, "InvalidRequest", "The request is malformed."),
            ReasonCode::NotFound => (404, "NotFound", "The requested resource does not exist."),
            ReasonCode::MethodNotAllowed => (
                405,
                "MethodNotAllowed",
                "This method is not allowed for the requested resource.",
            ),
            ReasonCode::AuthenticationRequired => (
                401,
                "AuthenticationRequired",
                "Authentication is required to access this resource.",
            ),
            ReasonCode::InvalidToken => (
                401,
                "InvalidToken",
                "The access token is invalid, expired or not meant for this service.",
            ),
            ReasonCode::InvalidApiKey => (401, "InvalidApiKey", "The API key is not valid."),
            ReasonCode::InsufficientScope => (
                403,
                "InsufficientScope",
                "The access token does not carry the scope this request needs.",
            ),
            ReasonCode::AccessDenied => (
                403,
                "AccessDenied",
                "You are not allowed to perform this action.",
            ),
            ReasonCode::PolicyError => (
                403,
                "AccessDenied",
                "You are not allowed to perform this action.",
            ),
            ReasonCode::InvalidClientAddress => (
                400,
                "InvalidClientAddress",
                "The forwarded client address is malformed.",
            ),
            ReasonCode::IpBlocked => (
                403,
                "IpBlocked",
                "Requests from your network address are not allowed.",
            ),
            ReasonCode::GeoBlocked => (
                403,
                "GeoBlocked",
                "Requests from your location are not allowed.",
            ),
            ReasonCode::Banned => (
                403,
                "Banned",
                "Requests from your address are suspended for a while after repeated refusals.",
            ),
            ReasonCode::RateLimited => (
                429,
                "RateLimited",
                "Too many requests; retry after the time in Retry-After.",
            ),
            ReasonCode::UserAgentBlocked => (
                403,
                "UserAgentBlocked",
                "Requests from this client software are not allowed.",
            ),
            ReasonCode::RequestBlocked => (
                403,
                "RequestBlocked",
                "This request was blocked by a security rule.",
            ),
            ReasonCode::RateLimiterUnavailable => (
                503,
                "RateLimiterUnavailable",
                "The service cannot check its request limits right now; retry shortly.",
            ),
            ReasonCode::UriTooLong => (414, "UriTooLong", "The request target is too long."),
            ReasonCode::HeadersTooLarge => (
                431,
                "RequestHeaderFieldsTooLarge",
                "The request headers are too large.",
            ),
            ReasonCode::PayloadTooLarge => (
                413,
                "PayloadTooLarge",
                "The request body is larger than this endpoint accepts.",
            ),
            ReasonCode::InvalidFraming => (
                400,
                "InvalidFraming",
                "The request's Content-Length or Transfer-Encoding is malformed or ambiguous.",
            ),
            ReasonCode::DirectoryListingDisabled => (
                403,
                "DirectoryListingDisabled",
                "Listing this folder is not allowed.",
            ),
            ReasonCode::FileNotReadable => (
                403,
                "FileNotReadable",
                "The file exists but cannot be read.",
            ),
            ReasonCode::UpstreamUnavailable => (
                502,
                "BadGateway",
                "The upstream service could not be reached.",
            ),
            ReasonCode::UpstreamTimeout => (
                504,
                "GatewayTimeout",
                "The upstream service did not answer in time.",
            ),
            ReasonCode::RangeNotSatisfiable => (
                416,
                "RangeNotSatisfiable",
                "The requested range is outside the file.",
            ),
            ReasonCode::ClientClosedRequest => (
                499,
                "ClientClosedRequest",
                "The client closed the connection before the response.",
            ),
            ReasonCode::Overloaded => (
                503,
                "ServiceUnavailable",
                "The gateway is at capacity; retry shortly.",
            ),
        };
        ReasonInfo {
            status,
            code,
            message,
        }
    }

    /// The stable identifier of the reason itself (for logs and metrics). Unlike
    /// [`ReasonInfo::code`], it is never overridden by an operator annotation.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReasonCode::InvalidPath => "invalid_path",
            ReasonCode::InvalidRequest => "invalid_request",
            ReasonCode::NotFound => "not_found",
            ReasonCode::MethodNotAllowed => "method_not_allowed",
            ReasonCode::AuthenticationRequired => "authentication_required",
            ReasonCode::InvalidToken => "invalid_token",
            ReasonCode::InvalidApiKey => "invalid_api_key",
            ReasonCode::InsufficientScope => "insufficient_scope",
            ReasonCode::AccessDenied => "access_denied",
            ReasonCode::PolicyError => "policy_error",
            ReasonCode::InvalidClientAddress => "invalid_client_address",
            ReasonCode::IpBlocked => "ip_blocked",
            ReasonCode::GeoBlocked => "geo_blocked",
            ReasonCode::Banned => "banned",
            ReasonCode::RateLimited => "rate_limited",
            ReasonCode::RateLimiterUnavailable => "rate_limiter_unavailable",
            ReasonCode::UserAgentBlocked => "user_agent_blocked",
            ReasonCode::RequestBlocked => "request_blocked",
            ReasonCode::UriTooLong => "uri_too_long",
            ReasonCode::HeadersTooLarge => "headers_too_large",
            ReasonCode::PayloadTooLarge => "payload_too_large",
            ReasonCode::InvalidFraming => "invalid_framing",
            ReasonCode::DirectoryListingDisabled => "directory_listing_disabled",
            ReasonCode::FileNotReadable => "file_not_readable",
            ReasonCode::UpstreamUnavailable => "upstream_unavailable",
            ReasonCode::UpstreamTimeout => "upstream_timeout",
            ReasonCode::Overloaded => "overloaded",
            ReasonCode::RangeNotSatisfiable => "range_not_satisfiable",
            ReasonCode::ClientClosedRequest => "client_closed_request",
        }
    }

    /// Every reason, for tests that check the table is total and consistent.
    pub const ALL: [ReasonCode; 29] = [
        ReasonCode::InvalidPath,
        ReasonCode::InvalidRequest,
        ReasonCode::NotFound,
        ReasonCode::MethodNotAllowed,
        ReasonCode::AuthenticationRequired,
        ReasonCode::InvalidToken,
        ReasonCode::InvalidApiKey,
        ReasonCode::InsufficientScope,
        ReasonCode::AccessDenied,
        ReasonCode::PolicyError,
        ReasonCode::InvalidClientAddress,
        ReasonCode::IpBlocked,
        ReasonCode::GeoBlocked,
        ReasonCode::Banned,
        ReasonCode::RateLimited,
        ReasonCode::RateLimiterUnavailable,
        ReasonCode::UserAgentBlocked,
        ReasonCode::RequestBlocked,
        ReasonCode::UriTooLong,
        ReasonCode::HeadersTooLarge,
        ReasonCode::PayloadTooLarge,
        ReasonCode::InvalidFraming,
        ReasonCode::DirectoryListingDisabled,
        ReasonCode::FileNotReadable,
        ReasonCode::UpstreamUnavailable,
        ReasonCode::UpstreamTimeout,
        ReasonCode::Overloaded,
        ReasonCode::RangeNotSatisfiable,
        ReasonCode::ClientClosedRequest,
    ];
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_to_an_error_status_and_a_code() {
        for reason in ReasonCode::ALL {
            let info = reason.info();
            assert!(
                (400..600).contains(&info.status),
                "{reason}: {}",
                info.status
            );
            assert!(!info.code.is_empty() && !info.message.is_empty());
        }
    }

    #[test]
    fn a_policy_error_looks_like_any_other_denial_to_the_client() {
        // An evaluation error must not tell the client that something broke inside.
        assert_eq!(
            ReasonCode::PolicyError.info().code,
            ReasonCode::AccessDenied.info().code
        );
        assert_eq!(ReasonCode::PolicyError.info().status, 403);
    }
}
