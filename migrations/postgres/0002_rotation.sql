-- The rotation loop looks for domains whose rotation or pending switch is due
-- and for keys whose retire grace has run out; without these indexes each
-- tick would scan every domain and key.
CREATE INDEX domains_next_rotation ON domains(next_rotation_at);
CREATE INDEX domains_pending_switch ON domains(pending_switch_at);
CREATE INDEX keys_state_retired ON keys(state, retired_at);
