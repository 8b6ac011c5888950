-- Email look-alikes (services/account/emails.py): the Unicode TR39 skeleton of each address, unique,
-- so that an address confusable with a registered one (e.g. a Cyrillic 'а' for a Latin 'a') is
-- refused by the INSERT itself, race-free. Rows created before this migration get theirs from
-- `oauthctl migrate` (users.backfill_email_skeletons); until then they are NULL (not compared).
ALTER TABLE users ADD COLUMN email_skeleton text;
CREATE UNIQUE INDEX users_email_skeleton_key ON users (email_skeleton);
