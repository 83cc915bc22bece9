package agent

import "time"

// ConfigReload is the outcome of the last attempt to load the configuration,
// at start or on SIGHUP, for gpuwarden_config_last_reload_successful and
// gpuwarden_config_last_reload_success_timestamp_seconds (the names
// Prometheus itself exports).
type ConfigReload struct {
	Successful  bool
	LastSuccess time.Time // zero before the first successful load
}

// SetConfigReload records a load of the configuration at at: a successful
// one moves LastSuccess, a refused one keeps it.
func (s *State) SetConfigReload(ok bool, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reload.Successful = ok
	if ok {
		s.reload.LastSuccess = at
	}
	s.publish()
}
