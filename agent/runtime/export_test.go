package runtime

// Holds returns the number of Runs in progress and Slot acquisitions not
// yet released, for tests that must know a Run has started.
func (s *Session) Holds() int64 { return s.m.holds.Load() &^ closingBit }

// Closing reports whether Close has begun.
func (s *Session) Closing() bool { return s.m.holds.Load()&closingBit != 0 }

// SetTrimOnClose turns the malloc trim after Session.Close on or off and
// returns the previous setting.
func SetTrimOnClose(on bool) bool { return trimOnClose.Swap(on) }
