package email_test

// Against an in-process IMAP server (go-imap's imapserver with
// imapmemserver) and an in-process SMTP server (go-smtp), on loopback.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/email"
	"github.com/fangd/fangd/actors/channel/email/emailtest"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

const (
	botAddr = emailtest.Bot
	botPass = emailtest.Password
)

type imapPeer struct {
	t    *testing.T
	addr string
	mem  *imapmemserver.Server
	user *imapmemserver.User
	srv  *imapserver.Server
}

func startIMAP(t *testing.T) *imapPeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	return startIMAPOn(t, ln, err)
}

// startIMAPOn serves the bot's mailbox (an empty INBOX) on ln, the
// listener just opened (err is its error).
func startIMAPOn(t *testing.T, ln net.Listener, err error) *imapPeer {
	if err != nil {
		t.Fatal(err)
	}
	p := &imapPeer{t: t, mem: imapmemserver.New(), user: imapmemserver.NewUser(botAddr, botPass), addr: ln.Addr().String()}
	p.user.Create("INBOX", nil)
	p.mem.AddUser(p.user)
	p.serve(ln)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *imapPeer) serve(ln net.Listener) {
	p.srv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return idleChecking{p.mem.NewSession().(imapserver.SessionIMAP4rev2)}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}, imap.CapIdle: {}},
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	go p.srv.Serve(ln)
}

// idleChecking makes IDLE report what changed before it began, as real
// servers do (Dovecot checks the mailbox when IDLE starts, then on change).
// imapmemserver's own IDLE reports only changes that happen after it has
// registered for them, and keeps the rest until the next command: mail that
// lands between the client's NOOP and that registration (a gap the client
// cannot see or close) would wait for the next IDLE refresh, 25 minutes, and
// the tests that deliver right after "connected" would time out now and then.
// Checking the mailbox while idling has no such gap.
type idleChecking struct{ imapserver.SessionIMAP4rev2 }

func (s idleChecking) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := s.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
	}
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// deliver puts a mail from sender into the bot's INBOX.
func (p *imapPeer) deliver(from, subject, body, msgID string) {
	raw := fmt.Sprintf("From: Ann <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		from, botAddr, subject, msgID, time.Now().Format(time.RFC1123Z), body)
	if _, err := p.user.Append("INBOX", bytes.NewReader([]byte(raw)), &imap.AppendOptions{Time: time.Now()}); err != nil {
		p.t.Fatal(err)
	}
}

func hostPort(addr string) (string, string) { h, p, _ := net.SplitHostPort(addr); return h, p }

func configure(h *channeltest.Harness, im *imapPeer, sm *emailtest.SMTP, pass string) {
	ih, ip := hostPort(im.addr)
	sh, sp := hostPort(sm.Addr)
	h.Configure("email", map[string]any{"username": botAddr, "token": pass, "imap_host": ih, "imap_port": ip,
		"smtp_host": sh, "smtp_port": sp, "imap_security": "none", "smtp_security": "none", "agent_name": channeltest.AgentName})
}

// connected is the bot connected to fresh IMAP and SMTP servers.
func connected(t *testing.T) (*channeltest.Harness, *imapPeer, *emailtest.SMTP) {
	im, sm := startIMAP(t), emailtest.StartSMTP(t)
	h := channeltest.New(t, channel.Builders{"email": email.New})
	configure(h, im, sm, botPass)
	h.WaitState("email", channel.StateConnected)
	return h, im, sm
}

// onlyReply waits for the bot's one mail and returns it as sm captured it.
func onlyReply(h *channeltest.Harness, sm *emailtest.SMTP) string {
	h.WaitFor("reply mailed", func() bool { return len(sm.Sent()) == 1 })
	return sm.Sent()[0]
}

func TestEmailRoundTrip(t *testing.T) {
	im, sm := startIMAP(t), emailtest.StartSMTP(t)
	im.deliver("old@fangd.test", "backlog", "mail from before the bot", "<old@fangd.test>") // not answered
	h := channeltest.New(t, channel.Builders{"email": email.New})
	configure(h, im, sm, botPass)
	h.WaitState("email", channel.StateConnected)
	im.deliver("ann@fangd.test", "Question", "What is the plan?\r\n\r\nOn Mon, Bob wrote:\r\n> old stuff", "<q1@fangd.test>")
	got := onlyReply(h, sm)
	for _, want := range []string{"RCPT ann@fangd.test", "Subject: Re: Question", "In-Reply-To: <q1@fangd.test>", "echo: What is the plan?"} {
		if !strings.Contains(got, want) {
			t.Fatalf("reply lacks %q:\n%s", want, got)
		}
	}
	if turns := h.Agents.Turns(); len(turns) != 1 || turns[0].Session != "channel:email:ann@fangd.test" || turns[0].Message != "What is the plan?" {
		t.Fatalf("turns = %+v", turns)
	}
	// The UID cursor is durable: a restart answers only new mail.
	h.Restart()
	h.WaitState("email", channel.StateConnected)
	im.deliver("ann@fangd.test", "Again", "second", "<q2@fangd.test>")
	// Mail is answered in UID order: had q1 been answered again, it would
	// have been before this one.
	if err := sm.Wait(channeltest.Context(t), "echo: second"); err != nil {
		t.Fatal(err)
	}
	if n := len(h.Agents.Turns()); n != 2 {
		t.Fatalf("%d turns, want 2", n)
	}
}

func TestFakeIMAPReportsMailQueuedBeforeIdle(t *testing.T) {
	im := startIMAP(t)
	exists := make(chan struct{}, 1)
	c, err := imapclient.DialInsecure(im.addr, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				select {
				case exists <- struct{}{}:
				default:
				}
			}
		}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(botAddr, botPass).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	im.deliver("ann@fangd.test", "gap", "between NOOP and IDLE", "<gap@fangd.test>")
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	kerneltest.WaitFor(t, "EXISTS while idling", func() bool {
		select {
		case <-exists:
			return true
		default:
			return false
		}
	})
}

// stoppingHost is a store that stops right after it has taken a delivery:
// no write after that lands, as when the daemon stops (or dies) there.
type stoppingHost struct {
	*channeltest.Host
	stopped atomic.Bool
	stop    context.CancelFunc
}

var errStopped = errors.New("store closed")

func (h *stoppingHost) Deliver(ctx context.Context, msgs ...channel.Inbound) error {
	if h.stopped.Load() {
		return errStopped
	}
	err := h.Host.Deliver(ctx, msgs...)
	h.stopped.Store(true)
	h.stop()
	return err
}

func (h *stoppingHost) DeliverAndSave(ctx context.Context, cur channel.Cursor, msgs ...channel.Inbound) error {
	if h.stopped.Load() {
		return errStopped
	}
	err := h.Host.DeliverAndSave(ctx, cur, msgs...)
	h.stopped.Store(true)
	h.stop()
	return err
}

func (h *stoppingHost) SaveCursor(k, v string) error {
	if h.stopped.Load() {
		return errStopped
	}
	return h.Host.SaveCursor(k, v)
}

// A stop right after a mail was delivered must not deliver it again on the
// next run: the UID cursor is saved with the delivery, not after it (when
// it was, TestEmailOutageAndQueuedReplies answered its mail twice now and
// then, as its restart came between the two writes).
func TestEmailStopAfterDeliveryDoesNotDeliverAgain(t *testing.T) {
	im := startIMAP(t)
	ih, ip := hostPort(im.addr)
	spec, _ := channel.Lookup("email")
	ad, err := email.New(&channel.Config{Spec: spec, Values: map[string]string{"username": botAddr, "imap_host": ih, "imap_port": ip,
		"smtp_host": "127.0.0.1", "smtp_port": "25", "imap_security": "none", "smtp_security": "none"},
		Secrets: map[string]string{"password": botPass}})
	if err != nil {
		t.Fatal(err)
	}
	base := channeltest.NewHost()
	run := func() (*stoppingHost, chan error) {
		ctx, cancel := context.WithCancel(t.Context())
		h := &stoppingHost{Host: base, stop: cancel}
		done, finished := make(chan error, 1), make(chan struct{})
		go func() { done <- ad.Run(ctx, h); close(finished) }()
		t.Cleanup(func() { cancel(); <-finished })
		<-base.Connections
		return h, done
	}

	h, done := run()
	im.deliver("ann@fangd.test", "Once", "answer me once", "<once@fangd.test>")
	select {
	case m := <-base.Delivered:
		if m.MessageID != "<once@fangd.test>" {
			t.Fatalf("delivered %+v", m)
		}
	case err := <-done:
		t.Fatalf("Run ended before delivering: %v", err)
	}
	<-done
	if !h.stopped.Load() {
		t.Fatal("the host never stopped")
	}

	// The next run sees only new mail.
	run()
	im.deliver("ann@fangd.test", "Next", "new mail", "<next@fangd.test>")
	if m := <-base.Delivered; m.MessageID != "<next@fangd.test>" {
		t.Fatalf("delivered %s again after the restart, want only <next@fangd.test>", m.MessageID)
	}
}
