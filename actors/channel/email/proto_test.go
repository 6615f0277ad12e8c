package email_test

// Wire-level checks of what the adapter writes (the raw mail the SMTP peer
// accepted), threading, sending while IMAP is down, and TLS trust.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"mime"
	"net"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/email"
	"github.com/fangd/fangd/actors/channel/email/emailtest"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

// deliverRaw puts a raw message (header lines, then body) into the INBOX.
func (p *imapPeer) deliverRaw(headers, body string) {
	raw := "From: Ann <ann@fangd.test>\r\nTo: " + botAddr + "\r\nDate: " + time.Now().Format(time.RFC1123Z) +
		"\r\nContent-Type: text/plain; charset=utf-8\r\n" + headers + "\r\n" + body + "\r\n"
	if _, err := p.user.Append("INBOX", bytes.NewReader([]byte(raw)), &imap.AppendOptions{Time: time.Now()}); err != nil {
		p.t.Fatal(err)
	}
}

// parsed reads a captured mail ("RCPT ...\r\n" + the DATA).
func parsed(t *testing.T, captured string) *mail.Message {
	t.Helper()
	_, data, _ := strings.Cut(captured, "\r\n")
	m, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatalf("the mail does not parse: %v\n%q", err, data)
	}
	return m
}

func TestEmailReplyCarriesTheReferencesChain(t *testing.T) {
	h, im, sm := connected(t)
	im.deliverRaw("Subject: Re: plan\r\nMessage-ID: <c3@fangd.test>\r\nIn-Reply-To: <b2@fangd.test>\r\n"+
		"References: <a1@fangd.test>\r\n <b2@fangd.test>\r\n", "and the third")
	m := parsed(t, onlyReply(h, sm))
	if got := m.Header.Get("In-Reply-To"); got != "<c3@fangd.test>" {
		t.Fatalf("In-Reply-To = %q", got)
	}
	if got := strings.Join(strings.Fields(m.Header.Get("References")), " "); got != "<a1@fangd.test> <b2@fangd.test> <c3@fangd.test>" {
		t.Fatalf("References = %q, want the parent's chain plus its Message-ID", got)
	}
}

func TestEmailHeadersCannotBeInjected(t *testing.T) {
	h, im, sm := connected(t)
	// The subject decodes to text with CR LF and a control character; a
	// References id carries a control byte.
	im.deliverRaw("Subject: =?utf-8?q?hi=0D=0ABcc:_victim@fangd.test=07?=\r\nMessage-ID: <q9@fangd.test>\r\n"+
		"References: <ok@fangd.test> <bad\x01id@fangd.test>\r\n", "hello")
	raw := onlyReply(h, sm)
	m := parsed(t, raw)
	if len(m.Header["Bcc"]) != 0 {
		t.Fatalf("a Bcc header got in:\n%s", raw)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsFunc(subject, func(r rune) bool { return r < ' ' }) || !strings.Contains(subject, "Re: hi") {
		t.Fatalf("subject = %q", subject)
	}
	if strings.Contains(raw, "\x01") {
		t.Fatalf("a control byte reached the headers:\n%q", raw)
	}
	if got := strings.Join(strings.Fields(m.Header.Get("References")), " "); got != "<ok@fangd.test> <q9@fangd.test>" {
		t.Fatalf("References = %q", got)
	}
}

func TestEmailSendsWhileIMAPIsDown(t *testing.T) {
	sm := emailtest.StartSMTP(t)
	// IMAP is down from the start (nothing listens on its port); SMTP is a
	// separate server.
	h := channeltest.New(t, channel.Builders{"email": email.New})
	configure(h, &imapPeer{addr: ssrftest.ClosedAddr(t)}, sm, botPass)
	h.WaitState("email", channel.StateBackoff)
	if _, err := h.Service.SendMessage(t.Context(), "email", "ann@fangd.test", "sent without IMAP", "system"); err != nil {
		t.Fatal(err)
	}
	// The SMTP server has the mail before the outbox has recorded it sent.
	h.WaitFor("mail sent while IMAP is down", func() bool { return len(sm.Sent()) == 1 && h.Get("email").OutboxPending == 0 },
		func() string {
			v := h.Get("email")
			return fmt.Sprintf("%s %q pending=%d", v.State, v.LastError, v.OutboxPending)
		})
	if v := h.Get("email"); v.State == channel.StateConnected || v.OutboxPending != 0 {
		t.Fatalf("state %s pending %d", v.State, v.OutboxPending)
	}
}

// selfSigned makes a certificate for 127.0.0.1 that signs itself.
func selfSigned(t *testing.T, name string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func startIMAPTLS(t *testing.T, cert tls.Certificate) *imapPeer {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	return startIMAPOn(t, ln, err)
}

func configureTLS(h *channeltest.Harness, im *imapPeer, sm *emailtest.SMTP, caPEM string) (*channel.ConfigureResult, error) {
	ih, ip := hostPort(im.addr)
	sh, sp := hostPort(sm.Addr)
	body := map[string]any{"username": botAddr, "token": botPass, "imap_host": ih, "imap_port": ip,
		"smtp_host": sh, "smtp_port": sp, "imap_security": "tls", "smtp_security": "tls", "agent_name": channeltest.AgentName}
	if caPEM != "" {
		body["ca_cert_pem"] = caPEM
	}
	return h.TryConfigure("email", body)
}

func TestEmailPrivateCA(t *testing.T) {
	imapCert, imapPEM := selfSigned(t, "imap.fangd.test")
	smtpCert, _ := selfSigned(t, "smtp.fangd.test")
	im, sm := startIMAPTLS(t, imapCert), emailtest.StartSMTPTLS(t, smtpCert)
	h := channeltest.New(t, channel.Builders{"email": email.New})

	// Not trusted: a permanent error, not a retry loop.
	if _, err := configureTLS(h, im, sm, ""); err != nil {
		t.Fatal(err)
	}
	v := h.WaitState("email", channel.StateError)
	if !strings.Contains(v.LastError, "IMAP server's TLS certificate is not trusted") {
		t.Fatalf("last_error = %q", v.LastError)
	}

	// A bad PEM is a 400 naming the field.
	if _, err := configureTLS(h, im, sm, "not a certificate"); err == nil || !strings.Contains(err.Error(), "ca_cert_pem") {
		t.Fatalf("bad PEM: %v", err)
	}

	// Trusting the IMAP server's CA connects; the SMTP server's certificate
	// is from another CA, so sending stops the channel with an error.
	if _, err := configureTLS(h, im, sm, imapPEM); err != nil {
		t.Fatal(err)
	}
	h.WaitState("email", channel.StateConnected)
	if _, err := h.Service.SendMessage(t.Context(), "email", "ann@fangd.test", "hello", "system"); err != nil {
		t.Fatal(err)
	}
	v = h.WaitState("email", channel.StateError)
	if !strings.Contains(v.LastError, "SMTP server's TLS certificate is not trusted") {
		t.Fatalf("last_error = %q", v.LastError)
	}
}
