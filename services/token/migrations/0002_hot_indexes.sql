-- Indexes the hot and the rare-but-large statements need (docs/performance.md "Plans that do not
-- depend on statistics").
--
-- refresh_tokens.parent_id is a self-referencing foreign key with ON DELETE SET NULL: without an
-- index, deleting a family (its user or app deleted) scans refresh_tokens once per deleted row,
-- and the reuse diagnosis ("is the child of this token still live?") scans it once per call.
CREATE INDEX refresh_tokens_parent ON refresh_tokens (parent_id) WHERE parent_id IS NOT NULL;

-- Deliberately NOT indexed: token_families (client_id) alone. Revoking every live family of a
-- deleted app scans the live families (a rare administrative write), while such an index offers
-- the planner a path from the app's families into the hot statements (tests/integration/test_hot_plans.py).
