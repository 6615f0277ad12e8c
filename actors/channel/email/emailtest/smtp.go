// Package emailtest is a local SMTP server for tests of the email channel
// (go-smtp on loopback): it takes PLAIN auth for Bot/Password only,
// records the mail it accepts and, in an outage (SetDown), answers 451 to
// MAIL FROM as a server that is briefly unable to accept mail does.
package emailtest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// The bot's mailbox and password, on the SMTP server and the IMAP one.
const (
	Bot      = "bot@fangd.test"
	Password = "hunter2"
)

// SMTP records the mail it accepts (Sent: "RCPT <to>\r\n" + the DATA).
type SMTP struct {
	channeltest.Recorder[string]
	Addr string
}

// StartSMTP serves plain SMTP (auth without TLS allowed) on loopback until
// the test ends.
func StartSMTP(t testing.TB) *SMTP {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, ln, true)
}

// StartSMTPTLS serves SMTP over TLS from the first byte with cert.
func StartSMTPTLS(t testing.TB, cert tls.Certificate) *SMTP {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, ln, false)
}

func serve(t testing.TB, ln net.Listener, insecureAuth bool) *SMTP {
	p := &SMTP{Addr: ln.Addr().String()}
	s := smtp.NewServer(p)
	s.AllowInsecureAuth = insecureAuth
	s.Domain = "mx.fangd.test"
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return p
}

// NewSession implements smtp.Backend.
func (p *SMTP) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{p: p}, nil }

// Wait waits for a mail with text on a line of its own.
func (p *SMTP) Wait(ctx context.Context, text string) error {
	_, err := p.WaitSent(ctx, func(m string) bool { return strings.Contains(m, "\r\n"+text+"\r\n") })
	return err
}

// Bodies decodes the text of each mail accepted for rcpt (quoted-printable
// undone, surrounding space trimmed).
func (p *SMTP) Bodies(t testing.TB, rcpt string) (out []string) {
	for _, m := range p.Sent() {
		to, data, _ := strings.Cut(m, "\r\n")
		if to != "RCPT "+rcpt {
			continue
		}
		msg, err := mail.ReadMessage(strings.NewReader(data))
		if err != nil {
			t.Fatalf("mail: %v", err)
		}
		var r io.Reader = msg.Body
		if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			r = quotedprintable.NewReader(r)
		}
		b, _ := io.ReadAll(r)
		out = append(out, strings.TrimSpace(string(b)))
	}
	return out
}

type session struct {
	p      *SMTP
	authed bool
	rcpt   string
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != Bot || pass != Password {
			return errors.New("bad credentials")
		}
		s.authed = true
		return nil
	}), nil
}
func (s *session) Mail(string, *smtp.MailOptions) error {
	s.p.Lock()
	defer s.p.Unlock()
	if s.p.Down() {
		return &smtp.SMTPError{Code: 451, Message: "try again later"}
	}
	if !s.authed {
		return &smtp.SMTPError{Code: 530, Message: "authentication required"}
	}
	return nil
}
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error { s.rcpt = to; return nil }
func (s *session) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	s.p.Lock()
	s.p.Record("RCPT " + s.rcpt + "\r\n" + string(b))
	s.p.Unlock()
	return nil
}
func (s *session) Reset()        {}
func (s *session) Logout() error { return nil }
