package bus

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/testenv"
)

func TestSubscribeUnsubscribe(t *testing.T) {
	b := testenv.Mosquitto(t)
	ctx := context.Background()
	c, err := Connect(ctx, Config{Brokers: []string{b.URL}, ClientID: "t-sub"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(nil)
	got := make(chan string, 10)
	if err := c.Subscribe(ctx, "a/+", 1, func(m Message) { got <- string(m.Payload) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, "a/+", 1, func(Message) {}); err == nil {
		t.Fatal("second Subscribe to the same filter succeeded")
	}
	if err := c.Publish(ctx, "a/1", 1, false, []byte("one")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "one" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message not delivered")
	}
	if err := c.Unsubscribe(ctx, "a/+", "never/subscribed"); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "a/2", 1, false, []byte("two")); err != nil {
		t.Fatal(err)
	}
	// A marker on another filter arrives after anything still in flight.
	marker := make(chan struct{})
	if err := c.Subscribe(ctx, "m", 1, func(Message) { close(marker) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "m", 1, false, []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-marker
	select {
	case p := <-got:
		t.Fatalf("received %q after Unsubscribe", p)
	default:
	}
	// The filter can be subscribed again.
	if err := c.Subscribe(ctx, "a/+", 1, func(m Message) { got <- string(m.Payload) }); err != nil {
		t.Fatalf("subscribe again: %v", err)
	}
}

// TestDeliveryInOrder: one subscription's handler sees messages in the
// order they were published (the hub relies on it for state reports).
func TestDeliveryInOrder(t *testing.T) {
	b := testenv.Mosquitto(t)
	ctx := context.Background()
	sub, err := Connect(ctx, Config{Brokers: []string{b.URL}, ClientID: "t-order-sub"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(nil)
	pub, err := Connect(ctx, Config{Brokers: []string{b.URL}, ClientID: "t-order-pub"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(nil)
	const n = 500
	got := make(chan int, n)
	if err := sub.Subscribe(ctx, "order/#", 1, func(m Message) {
		time.Sleep(50 * time.Microsecond) // a handler slower than the network
		v, _ := strconv.Atoi(string(m.Payload))
		got <- v
	}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := pub.Publish(ctx, "order/x", 1, false, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		select {
		case v := <-got:
			if v != i {
				t.Fatalf("message %d arrived as number %d", v, i)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d messages arrived", i, n)
		}
	}
}
