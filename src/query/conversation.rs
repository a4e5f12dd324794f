//! A conversation, composed from the routed queries (a cast, its ancestors, the casts it
//! quotes, its replies, the participants' profiles), so it is the same whichever source
//! answers each part.

use std::collections::BTreeSet;

use futures::StreamExt;
use futures::future::BoxFuture;

use super::model::*;
use super::{Answer, DataContext, QueryError};

/// Participant profiles read at once.
const PROFILE_CONCURRENCY: usize = 8;

impl DataContext {
    /// A cast with its ancestors, quotes, replies (recursively when asked) and participants;
    /// `None` when the cast is not live. `source` is the source that found the cast; the parts
    /// around it are read the same way (a part that cannot be read is left out).
    pub async fn conversation(
        &self,
        fid: u64,
        hash: Vec<u8>,
        request: ConversationRequest,
    ) -> Result<Answer<Option<Conversation>>, QueryError> {
        let found = self.cast(fid, hash).await?;
        let source = found.source;
        let Some(cast) = found.value else {
            return Ok(Answer {
                value: None,
                source,
            });
        };
        let mut authors = BTreeSet::from([cast.fid]);

        let mut parent_casts = Vec::new();
        let mut next = parent_cast(&cast);
        while let Some((parent_fid, parent_hash)) = next
            && parent_casts.len() < CONVERSATION_MAX_ANCESTORS
        {
            let Some(parent) = self.cast_or_none(parent_fid, &parent_hash).await else {
                break;
            };
            authors.insert(parent.fid);
            next = parent_cast(&parent);
            parent_casts.push(parent);
        }

        let quoted_casts = self.quoted_casts(&cast, &mut authors).await;
        let walk = Walk {
            request,
            max_depth: request.max_depth.clamp(1, CONVERSATION_MAX_DEPTH),
        };
        let mut budget = CONVERSATION_MAX_CASTS;
        let (replies, has_more_replies) = self
            .replies(&cast, walk, 0, &mut authors, &mut budget)
            .await;

        let participants: Vec<Profile> = futures::stream::iter(authors.iter().copied())
            .map(|fid| async move { self.profile(fid).await.ok().and_then(|a| a.value) })
            .buffered(PROFILE_CONCURRENCY)
            .filter_map(|profile| async move { profile })
            .collect()
            .await;

        let topic = topic(&cast.text);
        let author = participants.iter().find(|profile| profile.fid == cast.fid);
        let summary = format!(
            "Conversation started by {} with: \"{}\". {} replies in the thread.",
            author_display(cast.fid, author),
            truncate_chars(&cast.text, 50),
            count_replies(&replies)
        );
        Ok(Answer {
            value: Some(Conversation {
                cast,
                parent_casts,
                quoted_casts,
                replies,
                has_more_replies,
                participant_fids: authors.into_iter().collect(),
                participants,
                topic,
                summary,
            }),
            source,
        })
    }

    /// A cast by id, or None when it is not live or cannot be read now.
    async fn cast_or_none(&self, fid: u64, hash: &str) -> Option<Cast> {
        let bytes = hex::decode(hash).ok()?;
        match self.cast(fid, bytes).await {
            Ok(answer) => answer.value,
            Err(error) => {
                tracing::debug!(fid, hash, %error, "conversation: cast not read");
                None
            }
        }
    }

    async fn quoted_casts(&self, cast: &Cast, authors: &mut BTreeSet<u64>) -> Vec<Cast> {
        let mut quoted = Vec::new();
        for embed in &cast.embeds {
            if let Embed::Cast { fid, hash } = embed
                && let Some(found) = self.cast_or_none(*fid, hash).await
            {
                authors.insert(found.fid);
                quoted.push(found);
            }
        }
        quoted
    }

    /// Replies to `parent` at `depth` (0: direct replies), and whether more exist than read.
    fn replies<'a>(
        &'a self,
        parent: &'a Cast,
        walk: Walk,
        depth: u32,
        authors: &'a mut BTreeSet<u64>,
        budget: &'a mut usize,
    ) -> BoxFuture<'a, (Vec<Reply>, bool)> {
        Box::pin(async move {
            if depth >= walk.max_depth || *budget == 0 {
                return (Vec::new(), false);
            }
            let limit = walk
                .request
                .limit
                .clamp(1, MAX_PAGE_SIZE)
                .min(*budget as u32);
            let Ok(hash) = hex::decode(&parent.hash) else {
                return (Vec::new(), false);
            };
            let page = PageRequest {
                limit,
                cursor: None,
            };
            let casts = match self.casts_by_parent(parent.fid, hash, page).await {
                Ok(answer) => answer.value.items,
                Err(error) => {
                    tracing::debug!(fid = parent.fid, hash = %parent.hash, %error, "conversation: replies not read");
                    return (Vec::new(), false);
                }
            };
            // "More" is judged by the page being full, the same for both sources.
            let has_more = casts.len() >= limit as usize;
            *budget = budget.saturating_sub(casts.len());
            let mut replies = Vec::with_capacity(casts.len());
            for cast in casts {
                authors.insert(cast.fid);
                let quoted_casts = self.quoted_casts(&cast, authors).await;
                let read_nested = walk.request.recursive && depth + 1 < walk.max_depth;
                let (nested, nested_more) = if read_nested {
                    self.replies(&cast, walk, depth + 1, authors, budget).await
                } else {
                    (Vec::new(), false)
                };
                replies.push(Reply {
                    cast,
                    quoted_casts,
                    replies: nested,
                    replies_read: read_nested,
                    has_more_replies: nested_more,
                });
            }
            (replies, has_more)
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Walk {
    request: ConversationRequest,
    max_depth: u32,
}

fn parent_cast(cast: &Cast) -> Option<(u64, String)> {
    match &cast.parent {
        Some(CastTarget::Cast { fid, hash }) => Some((*fid, hash.clone())),
        _ => None,
    }
}

/// The first five words and `...`.
fn topic(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(5).collect();
    if words.is_empty() {
        "Untitled conversation".to_owned()
    } else {
        format!("{}...", words.join(" "))
    }
}

/// `Name (@username)`, `@username` or `FID n`.
fn author_display(fid: u64, profile: Option<&Profile>) -> String {
    let username = profile.and_then(|profile| profile.username.clone());
    match profile.and_then(|profile| profile.display_name.clone()) {
        Some(name) => format!("{name} (@{})", username.unwrap_or_else(|| fid.to_string())),
        None => match username {
            Some(username) => format!("@{username}"),
            None => format!("FID {fid}"),
        },
    }
}

fn count_replies(replies: &[Reply]) -> usize {
    replies
        .iter()
        .map(|reply| 1 + count_replies(&reply.replies))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_author_texts() {
        assert_eq!(topic(""), "Untitled conversation");
        assert_eq!(topic("  \n "), "Untitled conversation");
        assert_eq!(topic("one two"), "one two...");
        assert_eq!(topic("a b c d e f g"), "a b c d e...");
        assert_eq!(author_display(7, None), "FID 7");
        let mut profile = Profile {
            fid: 7,
            username: Some("alice".into()),
            display_name: None,
            pfp: None,
            bio: None,
            url: None,
            location: None,
            twitter: None,
            github: None,
            banner: None,
            primary_address_ethereum: None,
            primary_address_solana: None,
            user_data: Vec::new(),
            username_proofs: Vec::new(),
            follower_count: None,
            following_count: None,
        };
        assert_eq!(author_display(7, Some(&profile)), "@alice");
        profile.display_name = Some("Alice".into());
        assert_eq!(author_display(7, Some(&profile)), "Alice (@alice)");
        profile.username = None;
        assert_eq!(author_display(7, Some(&profile)), "Alice (@7)");
    }
}
