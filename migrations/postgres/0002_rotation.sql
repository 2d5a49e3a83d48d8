-- Each tick the rotation loop looks for keys whose retire grace has run out;
-- without this index that would scan every key. (Due domains are found by
-- next_check_at, indexed since 0001.)
CREATE INDEX keys_state_retired ON keys(state, retired_at);
