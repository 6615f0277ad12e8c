package main

// The IRC peer of the kill -9 test: a real ngircd on loopback (installed by
// `make test-deps`, as for actors/channel/irc) and a human speaking raw
// IRC to it.

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/irc/irctest"
)

type killIRC struct {
	t *testing.T
	*irctest.Ngircd

	mu   sync.Mutex // guards conn, got
	conn net.Conn
	got  []string // "<from>><target>><text>" of every PRIVMSG the human saw
}

func startKillIRC(t *testing.T) *killIRC {
	t.Helper()
	n := &killIRC{t: t, Ngircd: irctest.NewNgircd(t, "")}
	n.up()
	t.Cleanup(n.down)
	return n
}

// up starts the server and connects the human as alice.
func (n *killIRC) up() {
	t := n.t
	n.Start(t)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(n.Port))
	if err != nil {
		t.Fatal(err)
	}
	welcome := make(chan struct{})
	go func() {
		r := bufio.NewReader(c)
		once := sync.Once{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			prefix, rest := "", strings.TrimRight(line, "\r\n")
			if strings.HasPrefix(rest, ":") {
				prefix, rest, _ = strings.Cut(rest[1:], " ")
			}
			cmd, args, _ := strings.Cut(rest, " ")
			switch cmd {
			case "PING":
				fmt.Fprintf(c, "PONG %s\r\n", args)
			case "001":
				once.Do(func() { close(welcome) })
			case "PRIVMSG":
				target, text, _ := strings.Cut(args, " :")
				from, _, _ := strings.Cut(prefix, "!")
				n.mu.Lock()
				n.got = append(n.got, from+">"+target+">"+text)
				n.mu.Unlock()
			}
		}
	}()
	fmt.Fprintf(c, "PASS %s\r\nNICK alice\r\nUSER alice 0 * :Alice\r\n", irctest.Password)
	select {
	case <-welcome:
	case <-time.After(10 * time.Second):
		t.Fatal("alice not registered")
	}
	n.mu.Lock()
	n.conn = c
	n.mu.Unlock()
}

// down stops the server, every connection with it (setDown(false) starts
// it again and brings alice back before anything is sent to her).
func (n *killIRC) down() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.Stop()
	if n.conn != nil {
		n.conn.Close()
	}
}

func (n *killIRC) say(text string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Fprintf(n.conn, "PRIVMSG fangdbot :%s\r\n", text)
}

// sent lists what fangdbot said to alice.
func (n *killIRC) sent() (out []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, g := range n.got {
		if text, ok := strings.CutPrefix(g, "fangdbot>alice>"); ok {
			out = append(out, text)
		}
	}
	return out
}
