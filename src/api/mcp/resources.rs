//! The `waypoint://` resources: their URI templates (RFC 6570; URLs go in a `?url=` query
//! parameter, percent-encoded) and the parsing of a URI into what to read. Each resource
//! answers the same JSON as the tool it mirrors, with that tool's defaults (limit 10).

use rmcp::ErrorData;

/// What a `waypoint://` URI asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    UserByFid { fid: u64 },
    UserByUsername { username: String },
    VerificationsByFid { fid: u64 },
    Verification { fid: u64, address: String },
    AllVerificationsByFid { fid: u64 },
    Cast { fid: u64, hash: String },
    CastsByFid { fid: u64 },
    CastsByMention { fid: u64 },
    CastsByParent { fid: u64, hash: String },
    CastsByParentUrl { url: String },
    Conversation { fid: u64, hash: String },
    ReactionsByFid { fid: u64 },
    ReactionsByTargetCast { fid: u64, hash: String },
    ReactionsByTargetUrl { url: String },
    LinksByFid { fid: u64 },
    LinksByTarget { fid: u64 },
    LinkCompactState { fid: u64 },
    UsernameProofsByFid { fid: u64 },
    UsernameProofByName { name: String },
}

/// The resource templates: URI template, name, description.
pub const TEMPLATES: &[(&str, &str, &str)] = &[
    (
        "waypoint://users/{fid}",
        "user-by-fid",
        "A Farcaster profile by FID",
    ),
    (
        "waypoint://users/by-username/{username}",
        "user-by-username",
        "A Farcaster profile by username",
    ),
    (
        "waypoint://verifications/{fid}",
        "verifications-by-fid",
        "The addresses a FID has verified",
    ),
    (
        "waypoint://verifications/{fid}/{address}",
        "verification-by-fid-address",
        "One verified address of a FID",
    ),
    (
        "waypoint://verifications/all-by-fid/{fid}",
        "all-verification-messages-by-fid",
        "Every verification message of a FID",
    ),
    (
        "waypoint://casts/{fid}/{hash}",
        "cast-by-fid-hash",
        "One cast by its author's FID and its hash",
    ),
    (
        "waypoint://casts/by-fid/{fid}",
        "casts-by-fid",
        "A FID's newest casts",
    ),
    (
        "waypoint://casts/by-mention/{fid}",
        "casts-by-mention",
        "The newest casts that mention a FID",
    ),
    (
        "waypoint://casts/by-parent/{fid}/{hash}",
        "casts-by-parent",
        "Replies to a cast",
    ),
    (
        "waypoint://casts/by-parent-url{?url}",
        "casts-by-parent-url",
        "Casts under a URL such as a channel (the URL percent-encoded in ?url=)",
    ),
    (
        "waypoint://conversations/{fid}/{hash}",
        "conversation",
        "A cast with its ancestors, quoted casts, nested replies and participants",
    ),
    (
        "waypoint://reactions/by-fid/{fid}",
        "reactions-by-fid",
        "A FID's newest reactions",
    ),
    (
        "waypoint://reactions/by-target-cast/{fid}/{hash}",
        "reactions-by-target-cast",
        "Reactions to a cast",
    ),
    (
        "waypoint://reactions/by-target-url{?url}",
        "reactions-by-target-url",
        "Reactions to a URL (percent-encoded in ?url=)",
    ),
    (
        "waypoint://links/by-fid/{fid}",
        "links-by-fid",
        "The accounts a FID follows",
    ),
    (
        "waypoint://links/by-target/{fid}",
        "links-by-target",
        "The accounts that follow a FID",
    ),
    (
        "waypoint://links/compact-state/{fid}",
        "link-compact-state",
        "A FID's link compact state",
    ),
    (
        "waypoint://username-proofs/{fid}",
        "username-proofs-by-fid",
        "A FID's username proofs (fname, ENS, basename)",
    ),
    (
        "waypoint://username-proofs/by-name/{name}",
        "username-proof-by-name",
        "The proof of one username",
    ),
];

/// The static resources: URI, name, text.
pub const STATIC: &[(&str, &str, &str)] = &[
    (
        "str:///waypoint/docs",
        "waypoint-docs",
        "Waypoint keeps a PostgreSQL replica of the Farcaster network in sync with a Snapchain \
         hub. Its MCP tools read profiles, casts, conversations, reactions, follows, \
         verifications and username proofs by FID, from the hub or from the replica; casts \
         can also be searched by text and a following feed read from the replica.",
    ),
    (
        "memo://farcaster-info",
        "farcaster-info",
        "Farcaster is a decentralised social network. Every account has a numeric Farcaster ID \
         (FID); its posts are casts, identified by the author's FID and a hash. Likes and \
         recasts are reactions, follows are links, and verifications tie Ethereum or Solana \
         addresses to a FID.",
    ),
];

const SCHEME: &str = "waypoint://";

/// Parses a `waypoint://` URI; `Ok(None)` when it is not one.
pub fn parse(uri: &str) -> Result<Option<Resource>, ErrorData> {
    let Some(rest) = uri.strip_prefix(SCHEME) else {
        return Ok(None);
    };
    let rest = rest.trim_start_matches('/');
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let segments = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| percent_decode(segment).map_err(|error| invalid(uri, &error)))
        .collect::<Result<Vec<String>, ErrorData>>()?;
    let url_param = || -> Result<String, ErrorData> {
        query
            .into_iter()
            .flat_map(|query| query.split('&'))
            .find_map(|pair| pair.strip_prefix("url="))
            .map(|value| percent_decode(&value.replace('+', " ")))
            .transpose()
            .map_err(|error| invalid(uri, &error))?
            .filter(|url| !url.is_empty())
            .ok_or_else(|| invalid(uri, "the url query parameter is required (?url=...)"))
    };
    let fid = |text: &str| -> Result<u64, ErrorData> {
        match text.parse::<u64>() {
            Ok(fid) if fid > 0 => Ok(fid),
            _ => Err(invalid(uri, &format!("Invalid FID: {text}"))),
        }
    };
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let resource = match parts.as_slice() {
        ["users", "by-username", username] => Resource::UserByUsername {
            username: (*username).to_owned(),
        },
        ["users", id] => Resource::UserByFid { fid: fid(id)? },
        ["verifications", "all-by-fid", id] => Resource::AllVerificationsByFid { fid: fid(id)? },
        ["verifications", id] => Resource::VerificationsByFid { fid: fid(id)? },
        ["verifications", id, address] => Resource::Verification {
            fid: fid(id)?,
            address: (*address).to_owned(),
        },
        ["casts", "by-fid", id] => Resource::CastsByFid { fid: fid(id)? },
        ["casts", "by-mention", id] => Resource::CastsByMention { fid: fid(id)? },
        ["casts", "by-parent", id, hash] => Resource::CastsByParent {
            fid: fid(id)?,
            hash: (*hash).to_owned(),
        },
        ["casts", "by-parent-url"] => Resource::CastsByParentUrl { url: url_param()? },
        ["casts", id, hash] => Resource::Cast {
            fid: fid(id)?,
            hash: (*hash).to_owned(),
        },
        ["conversations", id, hash] => Resource::Conversation {
            fid: fid(id)?,
            hash: (*hash).to_owned(),
        },
        ["reactions", "by-fid", id] => Resource::ReactionsByFid { fid: fid(id)? },
        ["reactions", "by-target-cast", id, hash] => Resource::ReactionsByTargetCast {
            fid: fid(id)?,
            hash: (*hash).to_owned(),
        },
        ["reactions", "by-target-url"] => Resource::ReactionsByTargetUrl { url: url_param()? },
        ["links", "by-fid", id] => Resource::LinksByFid { fid: fid(id)? },
        ["links", "by-target", id] => Resource::LinksByTarget { fid: fid(id)? },
        ["links", "compact-state", id] => Resource::LinkCompactState { fid: fid(id)? },
        ["username-proofs", "by-name", name] => Resource::UsernameProofByName {
            name: (*name).to_owned(),
        },
        ["username-proofs", id] => Resource::UsernameProofsByFid { fid: fid(id)? },
        _ => {
            return Err(ErrorData::resource_not_found(
                format!("Resource not found: {uri}"),
                Some(serde_json::json!({ "uri": uri })),
            ));
        }
    };
    Ok(Some(resource))
}

fn invalid(uri: &str, message: &str) -> ErrorData {
    ErrorData::invalid_params(message.to_owned(), Some(serde_json::json!({ "uri": uri })))
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let escape = bytes
                .get(index + 1..index + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("Invalid percent-encoding in: {text}"))?;
            decoded.push(escape);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| format!("Invalid UTF-8 in: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(uri: &str) -> Resource {
        parse(uri).unwrap().unwrap()
    }

    #[test]
    fn every_template_parses() {
        let cases = [
            ("waypoint://users/12", Resource::UserByFid { fid: 12 }),
            ("waypoint:///users/12", Resource::UserByFid { fid: 12 }),
            (
                "waypoint://users/by-username/al%C3%AFce.eth",
                Resource::UserByUsername {
                    username: "alïce.eth".into(),
                },
            ),
            (
                "waypoint://verifications/3",
                Resource::VerificationsByFid { fid: 3 },
            ),
            (
                "waypoint://verifications/3/0xabc",
                Resource::Verification {
                    fid: 3,
                    address: "0xabc".into(),
                },
            ),
            (
                "waypoint://verifications/all-by-fid/3",
                Resource::AllVerificationsByFid { fid: 3 },
            ),
            (
                "waypoint://casts/3/0xab",
                Resource::Cast {
                    fid: 3,
                    hash: "0xab".into(),
                },
            ),
            ("waypoint://casts/by-fid/3", Resource::CastsByFid { fid: 3 }),
            (
                "waypoint://casts/by-mention/3",
                Resource::CastsByMention { fid: 3 },
            ),
            (
                "waypoint://casts/by-parent/3/ab",
                Resource::CastsByParent {
                    fid: 3,
                    hash: "ab".into(),
                },
            ),
            (
                "waypoint://casts/by-parent-url?url=https%3A%2F%2Fexample.com%2Fpost%2F1",
                Resource::CastsByParentUrl {
                    url: "https://example.com/post/1".into(),
                },
            ),
            (
                "waypoint://conversations/3/ab",
                Resource::Conversation {
                    fid: 3,
                    hash: "ab".into(),
                },
            ),
            (
                "waypoint://reactions/by-fid/3",
                Resource::ReactionsByFid { fid: 3 },
            ),
            (
                "waypoint://reactions/by-target-cast/3/ab",
                Resource::ReactionsByTargetCast {
                    fid: 3,
                    hash: "ab".into(),
                },
            ),
            (
                "waypoint://reactions/by-target-url?url=https://example.com/x",
                Resource::ReactionsByTargetUrl {
                    url: "https://example.com/x".into(),
                },
            ),
            ("waypoint://links/by-fid/3", Resource::LinksByFid { fid: 3 }),
            (
                "waypoint://links/by-target/3",
                Resource::LinksByTarget { fid: 3 },
            ),
            (
                "waypoint://links/compact-state/3",
                Resource::LinkCompactState { fid: 3 },
            ),
            (
                "waypoint://username-proofs/3",
                Resource::UsernameProofsByFid { fid: 3 },
            ),
            (
                "waypoint://username-proofs/by-name/alice",
                Resource::UsernameProofByName {
                    name: "alice".into(),
                },
            ),
        ];
        assert_eq!(cases.len(), TEMPLATES.len() + 1);
        for (uri, expected) in cases {
            assert_eq!(resource(uri), expected, "{uri}");
        }
    }

    #[test]
    fn bad_uris_are_refused_clearly() {
        assert_eq!(parse("memo://farcaster-info").unwrap(), None);
        let error = parse("waypoint://users/abc").unwrap_err();
        assert_eq!(error.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert_eq!(error.message, "Invalid FID: abc");
        assert!(parse("waypoint://users/0").is_err());
        let error = parse("waypoint://casts/by-parent-url").unwrap_err();
        assert!(error.message.contains("url"));
        let error = parse("waypoint://nothing/here").unwrap_err();
        assert_eq!(error.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND);
        assert!(parse("waypoint://users/by-username/%ZZ").is_err());
        assert!(parse("waypoint://users/by-username/%FF").is_err());
    }
}
