package channeltest

import (
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy in front of a real server (ngircd,
// prosody, a fake IMAP server): the FakeState gate for platforms that are
// not HTTP. It counts connections (Requests(ProxyConnect)) and plays an
// outage: SetDown(true) drops every proxied connection and refuses new
// ones, while the server itself and the test's own clients, which connect
// to it directly, stay up.
type Proxy struct {
	FakeState
	// Port is where the adapter connects.
	Port   int
	target string
	ln     net.Listener
	open   map[net.Conn]bool
	wg     sync.WaitGroup
}

// ProxyConnect is the route Proxy counts connections under.
const ProxyConnect = "connect"

// NewProxy proxies a loopback port to target; it stops at cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Port: ln.Addr().(*net.TCPAddr).Port, target: target, ln: ln, open: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Connections is how many connections the proxy accepted.
func (p *Proxy) Connections() int { return p.Requests(ProxyConnect) }

// SetDown starts or ends an outage.
func (p *Proxy) SetDown(down bool) {
	p.FakeState.SetDown(down)
	if down {
		p.dropAll()
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.Count(ProxyConnect)
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		// Checked and registered under one lock, so that an outage that
		// begins now either refuses this connection or drops it.
		p.Lock()
		if p.Down() {
			p.Unlock()
			c.Close()
			up.Close()
			continue
		}
		p.open[c], p.open[up] = true, true
		p.wg.Add(2)
		p.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies one direction; when either side ends, both are closed.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.Lock()
	delete(p.open, dst)
	delete(p.open, src)
	p.Unlock()
}

func (p *Proxy) dropAll() {
	p.Lock()
	var cs []net.Conn
	for c := range p.open {
		cs = append(cs, c)
	}
	p.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.dropAll()
	p.wg.Wait()
}

// FreePort is a loopback port that was free a moment ago, for a server
// the test starts (ngircd, prosody) that must be told its port.
func FreePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitListening waits until something accepts connections on the
// loopback port (a server the test started), failing t after 15 s.
func WaitListening(t testing.TB, what string, port int) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s: %v", what, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Trap listens on 127.0.0.2, a loopback address a network policy that
// allows only 127.0.0.1 keeps an adapter away from, and counts the
// connections it gets: a test of the policy expects none. It skips t where
// the machine has no 127.0.0.2; it closes when t ends.
func Trap(t testing.TB) (port int, hits *atomic.Int32) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	hits = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, hits
}
