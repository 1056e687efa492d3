package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/testenv"
)

// TestConnectRefused connects with a wrong password: every attempt is
// reported to OnConnectError as a refusal, Connect keeps trying until its
// context ends, and then returns the context's error.
func TestConnectRefused(t *testing.T) {
	b := testenv.Mosquitto(t, testenv.WithUser("dev", "right"))
	errs := make(chan error, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		c, err := Connect(ctx, Config{Brokers: []string{b.URL}, ClientID: "t-refused", Username: "dev", Password: "wrong"},
			Options{OnConnectError: func(err error) { errs <- err }})
		if c != nil {
			c.Close(nil)
		}
		done <- err
	}()
	for i := range 2 {
		select {
		case err := <-errs:
			if !IsRefused(err) {
				t.Fatalf("attempt %d: %v is not a refusal", i+1, err)
			}
		case <-time.After(time.Minute):
			t.Fatal("no failed attempt reported")
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect = %v, want context.Canceled", err)
	}

	// An unreachable broker is a failure, not a refusal.
	b.Stop(t)
	down := make(chan error, 100) // not errs: the first client may still report into it
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, err := Connect(ctx, Config{Brokers: []string{b.URL}, ClientID: "t-down"}, Options{OnConnectError: func(err error) { down <- err }})
		done <- err
	}()
	select {
	case err := <-down:
		if IsRefused(err) {
			t.Fatalf("%v counted as a refusal", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no failed attempt reported")
	}
	cancel()
	<-done
}
