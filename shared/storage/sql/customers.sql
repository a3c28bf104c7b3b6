-- The user ids with stored events, from the events table's export: the nightly run reads each
-- one's history as serving does, from their recent-activity item (the users table's export), or
-- by Query for an id without one (shared/storage/recent_histories.py). The events relation is the
-- events table as of the export chain's last export, as for interactions.sql.
SELECT DISTINCT item.user_id.s AS u
FROM ({events}) AS events
