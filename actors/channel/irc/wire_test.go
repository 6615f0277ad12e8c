package irc

// Tests against a scripted IRC server on loopback that records every byte
// the adapter writes, for what ngircd cannot show: the exact wire bytes, and
// servers whose SASL is missing or failing.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/kernel"
)

// wireServer is a minimal IRC server: it registers whoever sends USER,
// answers CAP/AUTHENTICATE as configured and records the raw bytes.
type wireServer struct {
	t  *testing.T
	ln net.Listener

	mu         sync.Mutex
	raw        bytes.Buffer
	sasl       bool   // offer the sasl capability
	saslResult string // numeric answering AUTHENTICATE <payload>: "903" or "904"
	conns      []net.Conn
}

func startWire(t *testing.T) *wireServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &wireServer{t: t, ln: ln, saslResult: "903"}
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *wireServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *wireServer) set(sasl bool, result string) {
	s.mu.Lock()
	s.sasl, s.saslResult = sasl, result
	s.mu.Unlock()
}

// bytesSeen is everything any client wrote so far.
func (s *wireServer) bytesSeen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

// sendAll writes a raw line to every connected client.
func (s *wireServer) sendAll(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		io.WriteString(c, line)
	}
}

type recorder struct{ s *wireServer }

func (r recorder) Write(p []byte) (int, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.raw.Write(p)
}

func (s *wireServer) serve(c net.Conn) {
	readMessages(bufio.NewReader(io.TeeReader(c, recorder{s})), func(m *message) {
		s.mu.Lock()
		sasl, result := s.sasl, s.saslResult
		s.mu.Unlock()
		switch {
		case m.command == "CAP" && m.param(0) == "LS":
			caps := "multi-prefix"
			if sasl {
				caps += " sasl=PLAIN"
			}
			fmt.Fprintf(c, ":srv CAP * LS :%s\r\n", caps)
		case m.command == "CAP" && m.param(0) == "REQ":
			fmt.Fprintf(c, ":srv CAP * ACK :%s\r\n", m.param(1))
		case m.command == "AUTHENTICATE" && m.param(0) == "PLAIN":
			io.WriteString(c, "AUTHENTICATE +\r\n")
		case m.command == "AUTHENTICATE":
			fmt.Fprintf(c, ":srv %s * :SASL result\r\n", result)
		case m.command == "USER":
			io.WriteString(c, ":srv 001 fangdbot :Welcome\r\n")
		case m.command == "PING":
			fmt.Fprintf(c, ":srv PONG srv :%s\r\n", m.param(0))
		}
	})
}

// readMessages hands fn each IRC message read from r, passing over lines
// that do not parse, until r ends: the read loop of every fake peer.
func readMessages(r *bufio.Reader, fn func(m *message)) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if m, err := parse(line); err == nil {
			fn(m)
		}
	}
}

// lines splits the capture on CRLF and fails the test if any line holds a
// bare CR, an LF or a NUL: those are what let text run as a command.
func wireLines(t *testing.T, raw string) []string {
	t.Helper()
	if !strings.HasSuffix(raw, "\r\n") {
		t.Fatalf("capture does not end with CRLF: %q", raw)
	}
	lines := strings.Split(strings.TrimSuffix(raw, "\r\n"), "\r\n")
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n\x00") {
			t.Fatalf("line with a control character on the wire: %q", l)
		}
	}
	return lines
}

func TestIRCRepliesCannotInjectCommands(t *testing.T) {
	srv := startWire(t)
	h := channeltest.New(t, channel.Builders{"irc": New})
	h.Agents.SetReply(func(_, msg string) (string, error) {
		return "agent says\rJOIN #fromagent\x00PART #fangd", nil
	})
	h.Configure("irc", map[string]any{"server": "127.0.0.1", "port": srv.port(), "nick": "fangdbot", "use_tls": false,
		"channels": []string{"#fangd"}, "agent_name": channeltest.AgentName})
	h.WaitState("irc", channel.StateConnected)

	// comms/send content and an agent reply, both carrying CR, NUL and LF.
	if _, err := h.Service.SendMessage(t.Context(), "irc", "alice", "before\rJOIN #injected\x00QUIT\nnext line", "system"); err != nil {
		t.Fatal(err)
	}
	srv.sendAll(":alice!a@h PRIVMSG fangdbot :hello\r\n")
	// A server token echoed in PONG must not carry a command either.
	srv.sendAll("PING :tok\rJOIN #reflected\r\n")
	h.WaitFor("the reply and the PONG", func() bool {
		raw := srv.bytesSeen()
		return strings.Contains(raw, "PART #fangd") && strings.Contains(raw, "PONG :tok")
	}, srv.bytesSeen)

	lines := wireLines(t, srv.bytesSeen())
	var privmsgs []string
	for _, l := range lines {
		if cmd, _, _ := strings.Cut(l, " "); cmd != "PRIVMSG" && cmd != "PONG" && cmd != "NICK" && cmd != "USER" && l != "JOIN #fangd" {
			t.Fatalf("unexpected command on the wire: %q (all: %q)", l, lines)
		}
		if strings.HasPrefix(l, "PRIVMSG ") {
			privmsgs = append(privmsgs, l)
		}
	}
	want := []string{"PRIVMSG alice :before", "PRIVMSG alice :JOIN #injected QUIT", "PRIVMSG alice :next line",
		"PRIVMSG alice :agent says", "PRIVMSG alice :JOIN #fromagent PART #fangd"}
	if strings.Join(privmsgs, "|") != strings.Join(want, "|") {
		t.Fatalf("PRIVMSG lines = %q, want %q", privmsgs, want)
	}
}

func TestIRCNoSASLOfferedIsAnErrorNotADowngrade(t *testing.T) {
	srv := startWire(t) // services down: no sasl capability
	h := channeltest.New(t, channel.Builders{"irc": New})
	h.Configure("irc", map[string]any{"server": "127.0.0.1", "port": srv.port(), "nick": "fangdbot", "use_tls": false,
		"password": "s3cret-sasl", "agent_name": channeltest.AgentName})
	v := h.WaitState("irc", channel.StateBackoff)
	if !strings.Contains(v.LastError, "SASL") || v.Identity != nil {
		t.Fatalf("status = %s %q identity %+v", v.State, v.LastError, v.Identity)
	}
	raw := srv.bytesSeen()
	if strings.Contains(raw, "s3cret") || strings.Contains(raw, "PASS") || strings.Contains(raw, "USER ") {
		t.Fatalf("the password went out another way, or we registered unidentified: %q", raw)
	}
	// Services come back: the next attempt logs in with SASL.
	srv.set(true, "903")
	h.WaitState("irc", channel.StateConnected)
	if !strings.Contains(srv.bytesSeen(), "AUTHENTICATE PLAIN") {
		t.Fatalf("connected without SASL: %q", srv.bytesSeen())
	}
}

func TestIRCSASLFailureBacksOff(t *testing.T) {
	srv := startWire(t)
	srv.set(true, "904")
	h := channeltest.New(t, channel.Builders{"irc": New})
	h.Configure("irc", map[string]any{"server": "127.0.0.1", "port": srv.port(), "nick": "fangdbot", "use_tls": false,
		"password": "s3cret-sasl", "agent_name": channeltest.AgentName})
	v := h.WaitState("irc", channel.StateBackoff)
	if !strings.Contains(v.LastError, "SASL authentication failed") {
		t.Fatalf("last_error = %q", v.LastError)
	}
	if strings.Contains(srv.bytesSeen(), "USER ") {
		t.Fatalf("registered after a SASL failure: %q", srv.bytesSeen())
	}
	srv.set(true, "903")
	h.WaitState("irc", channel.StateConnected)
}

func TestIRCServerPasswordIsPASS(t *testing.T) {
	srv := startWire(t)
	h := channeltest.New(t, channel.Builders{"irc": New})
	h.Configure("irc", map[string]any{"server": "127.0.0.1", "port": srv.port(), "nick": "fangdbot", "use_tls": false,
		"server_password": "letmein", "agent_name": channeltest.AgentName})
	h.WaitState("irc", channel.StateConnected)
	lines := wireLines(t, srv.bytesSeen())
	if lines[0] != "PASS :letmein" || strings.Contains(srv.bytesSeen(), "CAP ") {
		t.Fatalf("wire = %q", lines)
	}
}

func TestIRCOverlongLineIsAnError(t *testing.T) {
	srv := startWire(t)
	// A slow backoff holds the backoff state long enough to be seen (with
	// the fast one the link is back before a poll can catch it).
	slow := kernel.Backoff{Initial: time.Minute, Max: time.Minute, MaxRetries: 5, Window: time.Hour}
	h := channeltest.New(t, channel.Builders{"irc": New}, channeltest.WithBackoff(slow))
	h.Configure("irc", map[string]any{"server": "127.0.0.1", "port": srv.port(), "nick": "fangdbot", "use_tls": false,
		"agent_name": channeltest.AgentName})
	h.WaitState("irc", channel.StateConnected)
	// A line that never ends (10 KB and counting): fangd must not buffer
	// it without bound.
	srv.sendAll(":alice!a@h PRIVMSG fangdbot :" + strings.Repeat("x", 10000))
	v := h.WaitState("irc", channel.StateBackoff)
	if !strings.Contains(v.LastError, "longer than") {
		t.Fatalf("last_error = %q", v.LastError)
	}
}

// A link that drops during registration is retried even though a server
// password was sent: a server that refuses the password says so (ERROR or
// 464) before it closes; one that closes without a word may just be
// restarting.
func TestIRCDropDuringRegistrationIsRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(c)
			for { // read the registration, then hang up without a reason
				line, err := r.ReadString('\n')
				if err != nil || strings.HasPrefix(line, "USER ") {
					break
				}
			}
			c.Close()
		}
	}()
	h := channeltest.New(t, channel.Builders{"irc": New})
	h.Configure("irc", map[string]any{"server": "127.0.0.1", "port": ln.Addr().(*net.TCPAddr).Port, "nick": "fangdbot",
		"use_tls": false, "server_password": "letmein", "agent_name": channeltest.AgentName})
	v := h.WaitState("irc", channel.StateBackoff)
	if !strings.Contains(v.LastError, "without a reason") {
		t.Fatalf("last_error = %q", v.LastError)
	}
}
