package testenv

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards TCP connections to a target, counting the bytes the target
// sends and limiting each connection to a rate. Tests use it to make a
// transfer slow enough to interrupt, and to measure what was transferred.
type Proxy struct {
	// Addr is the proxy's host:port on loopback.
	Addr   string
	target string
	served atomic.Int64
	rate   int

	mu    sync.Mutex // guards conns
	conns map[net.Conn]bool
}

// NewProxy starts a proxy to target that sends at most rate bytes per
// second per connection (0: unlimited); it stops when the test ends.
func NewProxy(tb testing.TB, target string, rate int) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, rate: rate, conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		p.CloseAll()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = true
			p.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.serve(c)
				p.mu.Lock()
				delete(p.conns, c)
				p.mu.Unlock()
			}()
		}
	}()
	return p
}

func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() {
		io.Copy(s, c)
		s.(*net.TCPConn).CloseWrite()
	}()
	buf := make([]byte, 32<<10)
	start, sent := time.Now(), 0
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			p.served.Add(int64(n))
			sent += n
			if p.rate > 0 {
				if ahead := time.Duration(float64(sent)/float64(p.rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// Served returns the bytes the target sent through the proxy since the
// start or the last Reset.
func (p *Proxy) Served() int64 { return p.served.Load() }

// Reset zeroes the Served counter.
func (p *Proxy) Reset() { p.served.Store(0) }

// CloseAll cuts every open connection, as a network outage would; new
// connections are still accepted.
func (p *Proxy) CloseAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}
