package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
)

// TokenHash returns the hash of a test token secret.
func TokenHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// NewEnrollToken returns a valid unused token for secret, created at T0 and
// valid for an hour.
func NewEnrollToken(secret, device string, labels map[string]string) store.EnrollToken {
	return store.EnrollToken{Hash: TokenHash(secret), DeviceID: device, Labels: labels, Created: T0, Expires: T0.Add(time.Hour)}
}

func testEnrollTokens(t *testing.T, open opener) {
	t.Run("CreateGet", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		want := NewEnrollToken("secret-1", "edge-1", map[string]string{"site": "plant-a"})
		wantErr(t, "CreateEnrollToken", s.CreateEnrollToken(ctx, want), nil)
		got, err := s.GetEnrollToken(ctx, TokenHash("secret-1"))
		wantErr(t, "GetEnrollToken", err, nil)
		if !bytes.Equal(got.Hash, want.Hash) || got.DeviceID != "edge-1" || !sameMap(got.Labels, want.Labels) ||
			!sameTime(got.Created, T0) || !sameTime(got.Expires, want.Expires) || !got.UsedAt.IsZero() || got.UsedBy != "" {
			t.Errorf("GetEnrollToken = %+v, want %+v", got, want)
		}
		if got.Expires.Location() != time.UTC {
			t.Errorf("Expires in %v, want UTC", got.Expires.Location())
		}
		_, err = s.GetEnrollToken(ctx, TokenHash("other"))
		wantErr(t, "GetEnrollToken unknown", err, store.ErrNotFound)
		wantErr(t, "CreateEnrollToken twice", s.CreateEnrollToken(ctx, want), store.ErrConflict)
	})

	t.Run("CreateInvalid", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		tests := []struct {
			name   string
			change func(*store.EnrollToken)
		}{
			{"short hash", func(tok *store.EnrollToken) { tok.Hash = tok.Hash[:16] }},
			{"bad device ID", func(tok *store.EnrollToken) { tok.DeviceID = "a/b" }},
			{"bad label", func(tok *store.EnrollToken) { tok.Labels = map[string]string{"site": "a,b"} }},
			{"empty label value", func(tok *store.EnrollToken) { tok.Labels = map[string]string{"site": ""} }},
			{"no expiry", func(tok *store.EnrollToken) { tok.Expires = time.Time{} }},
			{"expires before created", func(tok *store.EnrollToken) { tok.Expires = T0.Add(-time.Second) }},
			{"already used", func(tok *store.EnrollToken) { tok.UsedAt, tok.UsedBy = T0, "edge-1" }},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				tok := NewEnrollToken(fmt.Sprint("invalid-", i), "", nil)
				tt.change(&tok)
				wantErr(t, "CreateEnrollToken", s.CreateEnrollToken(ctx, tok), store.ErrInvalid)
			})
		}
	})

	t.Run("Consume", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		tok := NewEnrollToken("secret-1", "", map[string]string{"site": "plant-a", "line": "3"})
		wantErr(t, "CreateEnrollToken", s.CreateEnrollToken(ctx, tok), nil)
		at := T0.Add(10 * time.Minute)
		used, err := s.ConsumeEnrollToken(ctx, TokenHash("secret-1"), "edge-7", at)
		wantErr(t, "ConsumeEnrollToken", err, nil)
		if used.UsedBy != "edge-7" || !sameTime(used.UsedAt, at) || !sameMap(used.Labels, tok.Labels) {
			t.Errorf("used token = %+v", used)
		}
		if got, _ := s.GetEnrollToken(ctx, TokenHash("secret-1")); got.UsedBy != "edge-7" || !sameTime(got.UsedAt, at) {
			t.Errorf("stored token after use = %+v", got)
		}
		d, err := s.GetDevice(ctx, "edge-7")
		wantErr(t, "GetDevice", err, nil)
		if !sameMap(d.HubLabels, tok.Labels) || !sameMap(d.Labels, tok.Labels) || !sameTime(d.FirstSeen, at) || d.Online {
			t.Errorf("enrolled device = %+v; want hub labels %v, first seen %v, offline", d, tok.Labels, at)
		}
		if ds, _ := s.ListDevices(ctx, store.Selector{"site": "plant-a"}); len(ds) != 1 || ds[0].ID != "edge-7" {
			t.Errorf("selector site=plant-a finds %v, want edge-7", ds)
		}
		_, err = s.ConsumeEnrollToken(ctx, TokenHash("secret-1"), "edge-8", at)
		wantErr(t, "ConsumeEnrollToken again", err, store.ErrConflict)
		if _, err := s.GetDevice(ctx, "edge-8"); err == nil {
			t.Error("a refused enrollment registered its device")
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustUpsertDevice(t, s, "edge-1")
		for _, tok := range []store.EnrollToken{
			NewEnrollToken("free", "", nil),
			NewEnrollToken("named", "edge-2", nil),
		} {
			wantErr(t, "CreateEnrollToken", s.CreateEnrollToken(ctx, tok), nil)
		}
		tests := []struct {
			name   string
			secret string
			device string
			at     time.Time
			want   error
		}{
			{"unknown token", "nope", "edge-9", T0, store.ErrNotFound},
			{"expired", "free", "edge-9", T0.Add(time.Hour), store.ErrExpired},
			{"expired long ago", "free", "edge-9", T0.Add(48 * time.Hour), store.ErrExpired},
			{"registered ID without a naming token", "free", "edge-1", T0, store.ErrConflict},
			{"other device than named", "named", "edge-3", T0, store.ErrInvalid},
			{"invalid device ID", "free", "a+b", T0, store.ErrInvalid},
			{"zero time", "free", "edge-9", time.Time{}, store.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.ConsumeEnrollToken(ctx, TokenHash(tt.secret), tt.device, tt.at)
				wantErr(t, "ConsumeEnrollToken", err, tt.want)
			})
		}
		// Every refusal left the tokens usable.
		for _, c := range []struct{ secret, device string }{{"free", "edge-9"}, {"named", "edge-2"}} {
			_, err := s.ConsumeEnrollToken(ctx, TokenHash(c.secret), c.device, T0.Add(time.Minute))
			wantErr(t, "ConsumeEnrollToken after refusals", err, nil)
		}
	})

	t.Run("ReenrollNamedDevice", func(t *testing.T) {
		// A token naming a registered device re-enrolls it (a replaced
		// unit): its hub labels are kept and the token's added on top.
		s, ctx := open(t), t.Context()
		MustUpsertDevice(t, s, "edge-1")
		_, err := s.SetLabels(ctx, "edge-1", map[string]string{"site": "old", "owner": "ops"}, nil)
		wantErr(t, "SetLabels", err, nil)
		wantErr(t, "CreateEnrollToken", s.CreateEnrollToken(ctx, NewEnrollToken("re", "edge-1", map[string]string{"site": "new"})), nil)
		_, err = s.ConsumeEnrollToken(ctx, TokenHash("re"), "edge-1", T0.Add(time.Minute))
		wantErr(t, "ConsumeEnrollToken", err, nil)
		d, _ := s.GetDevice(ctx, "edge-1")
		if want := map[string]string{"site": "new", "owner": "ops"}; !sameMap(d.HubLabels, want) {
			t.Errorf("hub labels = %v, want %v", d.HubLabels, want)
		}
		if !sameTime(d.FirstSeen, T0) {
			t.Errorf("FirstSeen moved to %v", d.FirstSeen)
		}
	})

	t.Run("ConcurrentConsume", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		wantErr(t, "CreateEnrollToken", s.CreateEnrollToken(ctx, NewEnrollToken("race", "", nil)), nil)
		const n = 8
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			won       []string
			conflicts int
		)
		for i := range n {
			wg.Go(func() {
				id := fmt.Sprint("edge-", i)
				_, err := s.ConsumeEnrollToken(ctx, TokenHash("race"), id, T0)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won = append(won, id)
				case errors.Is(err, store.ErrConflict):
					conflicts++
				default:
					t.Errorf("ConsumeEnrollToken(%s): %v", id, err)
				}
			})
		}
		wg.Wait()
		if len(won) != 1 || conflicts != n-1 {
			t.Fatalf("%d of %d concurrent uses succeeded (%v), %d conflicts; want exactly one", len(won), n, won, conflicts)
		}
		ds, _ := s.ListDevices(ctx, nil)
		if len(ds) != 1 || ds[0].ID != won[0] {
			t.Errorf("registered devices %v, want only %s", ds, won[0])
		}
	})
}
