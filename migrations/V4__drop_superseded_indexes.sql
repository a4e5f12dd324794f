-- The live-row indexes of V3 answer every query these V2 indexes served: the read API reads live
-- rows only, and the backfill's reconcile looks up a fid's live rows. Keeping both made every
-- insert maintain two indexes for one purpose (the backfill wrote about a fifth slower).
-- Indexes the write path itself needs (the CRDT keys, reply roots, mentions, usernames) stay.

DROP INDEX casts_fid_timestamp;
DROP INDEX casts_parent_hash;
DROP INDEX casts_parent_url;
DROP INDEX reactions_fid_timestamp;
DROP INDEX reactions_target_cast;
DROP INDEX reactions_target_url;
DROP INDEX links_fid_type;
DROP INDEX links_target;
