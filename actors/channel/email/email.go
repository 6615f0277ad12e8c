// Package email is the email adapter: inbound mail from IMAP (IMAP4rev1/2
// with IDLE, github.com/emersion/go-imap/v2), replies over SMTP
// (github.com/emersion/go-smtp) threaded with In-Reply-To/References. The
// last processed UID (with the mailbox's UIDVALIDITY) is kept durably, so
// a restart neither loses nor repeats mail; the backlog that was there
// before the channel was first configured is not answered.
//
// SMTP is a separate server from IMAP: Send dials SMTP on its own, so
// replies go out while the IMAP link is down (see channel.LinkFreeSender).
package email

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/fangd/fangd/actors/channel"

	_ "github.com/emersion/go-message/charset" // decode non-UTF-8 mail
)

// idleRefresh re-issues IDLE before servers drop it (RFC 2177: 29 min).
const idleRefresh = 25 * time.Minute

// Adapter is one mailbox.
type Adapter struct {
	imapAddr, smtpAddr string
	imapSec, smtpSec   string // "tls", "starttls" or "none"
	imapHost, smtpHost string
	user, pass, from   string
	mailbox            string
	// roots are the CAs trusted for IMAP and SMTP: the system's, or only
	// those of ca_cert_pem (a private CA) when it is set.
	roots *x509.CertPool
}

// maxReferences bounds the References chain a reply carries: the thread's
// first message and the most recent ones, as RFC 5322 3.6.4 allows
// trimming.
const maxReferences = 20

// New builds the adapter (no I/O).
func New(cfg *channel.Config) (channel.Adapter, error) {
	a := &Adapter{user: cfg.Text("username"), pass: cfg.Secret("password"), from: cfg.Text("from_address"),
		mailbox: cfg.Text("mailbox"), imapHost: cfg.Text("imap_host"), smtpHost: cfg.Text("smtp_host")}
	if a.mailbox == "" {
		a.mailbox = "INBOX"
	}
	if a.from == "" {
		a.from = a.user
	}
	if _, err := mail.ParseAddress(a.from); err != nil {
		field := "from_address"
		if cfg.Text("from_address") == "" {
			field = "username"
		}
		return nil, &channel.FieldError{Field: field, Msg: "must be an email address (or set from_address)"}
	}
	for _, f := range []struct{ key, host string }{{"imap_host", a.imapHost}, {"smtp_host", a.smtpHost}} {
		if strings.ContainsAny(f.host, "/: ") && net.ParseIP(f.host) == nil {
			return nil, &channel.FieldError{Field: f.key, Msg: "must be a host name or address"}
		}
	}
	ip, sp := cfg.Int("imap_port"), cfg.Int("smtp_port")
	if ip <= 0 || ip > 65535 {
		return nil, &channel.FieldError{Field: "imap_port", Msg: "must be between 1 and 65535"}
	}
	if sp <= 0 || sp > 65535 {
		return nil, &channel.FieldError{Field: "smtp_port", Msg: "must be between 1 and 65535"}
	}
	if pem := cfg.Text("ca_cert_pem"); pem != "" {
		a.roots = x509.NewCertPool()
		if !a.roots.AppendCertsFromPEM([]byte(pem)) {
			return nil, &channel.FieldError{Field: "ca_cert_pem", Msg: "holds no PEM certificate"}
		}
	}
	a.imapAddr = net.JoinHostPort(a.imapHost, strconv.Itoa(ip))
	a.smtpAddr = net.JoinHostPort(a.smtpHost, strconv.Itoa(sp))
	var err error
	if a.imapSec, err = security(cfg, "imap_security", ip == 993); err != nil {
		return nil, err
	}
	if a.smtpSec, err = security(cfg, "smtp_security", sp == 465); err != nil {
		return nil, err
	}
	return a, nil
}

// security reads a tls/starttls/none field; by default implicit TLS on the
// implicit-TLS port, STARTTLS otherwise.
func security(cfg *channel.Config, key string, implicit bool) (string, error) {
	switch v := strings.ToLower(cfg.Text(key)); v {
	case "":
		if implicit {
			return "tls", nil
		}
		return "starttls", nil
	case "tls", "starttls", "none":
		return v, nil
	}
	return "", &channel.FieldError{Field: key, Msg: "must be tls, starttls or none"}
}

// Capabilities: mail has no practical length limit; providers cap sending
// rates (per hour), so go slowly.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: 100000, Threads: true, Markdown: "none",
		Pace: channel.Pace{PerSecond: 1, Burst: 5}}
}

// LinkFreeSender: Send needs nothing Run set up.
func (a *Adapter) LinkFreeSender() {}

func (a *Adapter) tlsConfig(host string) *tls.Config {
	return &tls.Config{ServerName: host, RootCAs: a.roots, MinVersion: tls.VersionTLS12}
}

func (a *Adapter) dialIMAP(opts *imapclient.Options) (*imapclient.Client, error) {
	opts.TLSConfig = a.tlsConfig(a.imapHost)
	opts.Dialer = &net.Dialer{Timeout: 20 * time.Second}
	var c *imapclient.Client
	var err error
	switch a.imapSec {
	case "tls":
		c, err = imapclient.DialTLS(a.imapAddr, opts)
	case "starttls":
		c, err = imapclient.DialStartTLS(a.imapAddr, opts)
	default:
		c, err = imapclient.DialInsecure(a.imapAddr, opts)
	}
	return c, certError("IMAP", err)
}

// certError marks a server certificate that does not verify permanent:
// retrying cannot make it trusted, only a new configuration can
// (ca_cert_pem for a private CA). Other errors pass through.
func certError(service string, err error) error {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		cerr x509.CertificateInvalidError
	)
	if err != nil && (errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr)) {
		return channel.Permanent(fmt.Errorf("the %s server's TLS certificate is not trusted (set ca_cert_pem for a private CA): %w", service, err))
	}
	return err
}

// loginError marks authentication failures permanent.
func loginError(err error) error {
	var ie *imap.Error
	if errors.As(err, &ie) && (ie.Code == imap.ResponseCodeAuthenticationFailed || ie.Code == imap.ResponseCodeAuthorizationFailed || ie.Type == imap.StatusResponseTypeNo) {
		return channel.Permanent(fmt.Errorf("IMAP login failed: %s", ie.Text))
	}
	return err
}

// Probe logs in to IMAP and out again.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	c, err := a.dialIMAP(&imapclient.Options{})
	if err != nil {
		return channel.Identity{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.Login(a.user, a.pass).Wait(); err != nil {
		return channel.Identity{}, certError("IMAP", loginError(err))
	}
	c.Logout().Wait()
	return channel.Identity{ID: a.user, Name: a.from}, nil
}

// Run watches the mailbox: fetch what is new, then IDLE until the server
// reports more (or poll with NOOP where IDLE is not offered).
func (a *Adapter) Run(ctx context.Context, h channel.Host) error {
	notify := make(chan struct{}, 1)
	opts := &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				select {
				case notify <- struct{}{}:
				default:
				}
			}
		}}}
	c, err := a.dialIMAP(opts)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.Login(a.user, a.pass).Wait(); err != nil {
		return certError("IMAP", loginError(err))
	}
	sel, err := c.Select(a.mailbox, &imap.SelectOptions{ReadOnly: false}).Wait()
	if err != nil {
		return channel.Permanent(fmt.Errorf("cannot open mailbox %s: %w", a.mailbox, err))
	}
	last, err := a.cursor(h, sel)
	if err != nil {
		return err
	}
	h.Connected(channel.Identity{ID: a.user, Name: a.from})
	canIdle := c.Caps().Has(imap.CapIdle)
	for {
		if last, err = a.fetchNew(ctx, h, c, sel.UIDValidity, last); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := a.wait(ctx, c, canIdle, notify); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		h.Alive()
	}
}

// cursor returns the last processed UID for this UIDVALIDITY. On first use
// (or when the mailbox was rebuilt) it starts after what is already there.
func (a *Adapter) cursor(h channel.Host, sel *imap.SelectData) (imap.UID, error) {
	saved, err := h.Cursor("uid")
	if err != nil {
		return 0, err
	}
	validity, uid, _ := strings.Cut(saved, ":")
	if validity == strconv.FormatUint(uint64(sel.UIDValidity), 10) {
		n, _ := strconv.ParseUint(uid, 10, 32)
		return imap.UID(n), nil
	}
	last := imap.UID(0)
	if sel.UIDNext > 0 {
		last = sel.UIDNext - 1
	}
	return last, h.SaveCursor("uid", fmt.Sprintf("%d:%d", sel.UIDValidity, last))
}

func (a *Adapter) fetchNew(ctx context.Context, h channel.Host, c *imapclient.Client, validity uint32, last imap.UID) (imap.UID, error) {
	var set imap.UIDSet
	set.AddRange(last+1, 0) // last+1:*
	msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		return last, err
	}
	var in []channel.Inbound
	max := last
	for _, m := range msgs {
		if m.UID <= last { // "*" names the newest message even when it is old
			continue
		}
		if m.UID > max {
			max = m.UID
		}
		for _, sec := range m.BodySection {
			if msg, ok := a.parse(sec.Bytes); ok {
				in = append(in, msg)
			}
		}
	}
	if max == last {
		return last, nil
	}
	// The mail and the cursor past it are stored in one write: saved
	// apart, a stop between the two (a restart while the cursor's write
	// waits for the sync) leaves the mail stored and the cursor behind, and
	// the next run delivers it again, so the agent answers it twice.
	cur := channel.Cursor{Key: "uid", Value: fmt.Sprintf("%d:%d", validity, max)}
	if err := h.DeliverAndSave(ctx, cur, in...); err != nil {
		return last, err
	}
	return max, nil
}

// parse reads a message's sender, subject, id and plain-text body; it
// skips our own mail and automatic replies, which would loop.
func (a *Adapter) parse(raw []byte) (channel.Inbound, bool) {
	r, err := gomail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		return channel.Inbound{}, false
	}
	hdr := r.Header
	from, err := hdr.AddressList("From")
	if err != nil || len(from) == 0 {
		return channel.Inbound{}, false
	}
	sender := strings.ToLower(from[0].Address)
	if sender == strings.ToLower(a.from) || sender == strings.ToLower(a.user) {
		return channel.Inbound{}, false
	}
	if auto := strings.ToLower(hdr.Get("Auto-Submitted")); auto != "" && auto != "no" {
		return channel.Inbound{}, false
	}
	switch strings.ToLower(hdr.Get("Precedence")) {
	case "bulk", "junk", "list":
		return channel.Inbound{}, false
	}
	subject, _ := hdr.Subject()
	msgID := msgIDs(hdr.Get("Message-Id"))
	if len(msgID) != 1 {
		msgID = nil // none, or not one well-formed id: reply unthreaded
	}
	// The thread's References chain (the parent's References plus the
	// parent's Message-ID, RFC 5322 3.6.4) rides in ThreadID, which the
	// runtime hands back with the reply.
	thread := append(msgIDs(hdr.Get("References")), msgID...)
	var body string
	for {
		p, err := r.NextPart()
		if err != nil {
			break
		}
		if ih, ok := p.Header.(*gomail.InlineHeader); ok {
			ct, _, _ := ih.ContentType()
			if ct == "text/plain" || ct == "" {
				b, _ := io.ReadAll(io.LimitReader(p.Body, 1<<20))
				body = string(b)
				break
			}
		}
	}
	body = stripQuoted(body)
	if strings.TrimSpace(body) == "" {
		body = subject
	}
	date, _ := hdr.Date()
	return channel.Inbound{ChatID: sender, UserID: sender, UserName: from[0].Name, Text: body, Subject: subject,
		MessageID: strings.Join(msgID, ""), ThreadID: strings.Join(trimReferences(thread), " "), Direct: true, At: date}, true
}

// msgIDs returns the "<...>" message ids in a header value, skipping any
// that holds a character a header must not (controls, spaces, 8-bit):
// they are written back into our replies' headers.
func msgIDs(v string) []string {
	var out []string
	for {
		start := strings.IndexByte(v, '<')
		if start < 0 {
			return out
		}
		end := strings.IndexByte(v[start:], '>')
		if end < 0 {
			return out
		}
		id := v[start : start+end+1]
		v = v[start+end+1:]
		ok := len(id) > 2 && len(id) <= 250
		for i := 0; ok && i < len(id); i++ {
			ok = id[i] > ' ' && id[i] < 0x7f
		}
		if ok {
			out = append(out, id)
		}
	}
}

// trimReferences keeps the first id and the latest maxReferences-1.
func trimReferences(ids []string) []string {
	if len(ids) <= maxReferences {
		return ids
	}
	return append([]string{ids[0]}, ids[len(ids)-maxReferences+1:]...)
}

// headerText makes text safe for a header value: control characters (CR
// and LF would end the header and start another, "x\r\nBcc: ...") become
// spaces.
func headerText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// stripQuoted drops the quoted tail of a reply ("On ... wrote:" and ">"
// lines) so the agent sees what was actually written.
func stripQuoted(body string) string {
	lines := strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n")
	var out []string
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, ">") {
			continue
		}
		if strings.HasPrefix(t, "On ") && strings.HasSuffix(t, "wrote:") && i > 0 {
			break
		}
		out = append(out, l)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

// wait blocks until the mailbox may have changed.
func (a *Adapter) wait(ctx context.Context, c *imapclient.Client, canIdle bool, notify chan struct{}) error {
	if !canIdle {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(30 * time.Second):
		}
		return c.Noop().Wait()
	}
	// Mail that arrived while the last batch was being stored is queued on
	// the server, and some servers (go-imap's own among them) only report
	// queued changes after a command completes, not when IDLE starts: a NOOP
	// first flushes them into notify, so the select below returns at once
	// instead of sleeping until the next refresh.
	if err := c.Noop().Wait(); err != nil {
		return err
	}
	idle, err := c.Idle()
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-notify:
	case <-time.After(idleRefresh):
	case <-c.Closed():
	}
	if err := idle.Close(); err != nil {
		return err
	}
	return idle.Wait()
}

// Send mails m.Text to m.ChatID (an address) over SMTP.
func (a *Adapter) Send(ctx context.Context, m channel.Outbound) (string, error) {
	to, err := mail.ParseAddress(m.ChatID)
	if err != nil || headerText(to.Address) != to.Address {
		return "", channel.Rejected(fmt.Errorf("%q is not an email address", m.ChatID))
	}
	domain := a.from[strings.LastIndex(a.from, "@")+1:]
	key := m.Key
	if key == "" {
		key = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	msgID := "<" + key + "@" + domain + ">"
	subject := headerText(m.Subject)
	if strings.TrimSpace(subject) == "" {
		subject = "Message from " + a.from
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: %s\r\n", a.from, to.Address,
		mime.QEncoding.Encode("utf-8", subject), time.Now().UTC().Format(time.RFC1123Z), msgID)
	if parent := msgIDs(m.ReplyTo); len(parent) == 1 {
		refs := msgIDs(m.ThreadID)
		if len(refs) == 0 || refs[len(refs)-1] != parent[0] {
			refs = append(refs, parent[0])
		}
		fmt.Fprintf(&buf, "In-Reply-To: %s\r\nReferences: %s\r\n", parent[0], strings.Join(trimReferences(refs), "\r\n "))
	}
	buf.WriteString("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	qp := quotedprintable.NewWriter(&buf)
	qp.Write([]byte(strings.ReplaceAll(m.Text, "\n", "\r\n")))
	qp.Close()

	c, err := a.dialSMTP(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if ok, _ := c.Extension("AUTH"); ok {
		if err := c.Auth(sasl.NewPlainClient("", a.user, a.pass)); err != nil {
			return "", smtpError(err)
		}
	}
	if err := c.SendMail(a.from, []string{to.Address}, &buf); err != nil {
		return "", smtpError(err)
	}
	c.Quit()
	return msgID, nil
}

func (a *Adapter) dialSMTP(ctx context.Context) (*smtp.Client, error) {
	d := &net.Dialer{Timeout: 20 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", a.smtpAddr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	tc := a.tlsConfig(a.smtpHost)
	switch a.smtpSec {
	case "tls":
		tconn := tls.Client(conn, tc)
		if err := tconn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, certError("SMTP", err)
		}
		return smtp.NewClient(tconn), nil
	case "starttls":
		c, err := smtp.NewClientStartTLS(conn, tc)
		if err != nil {
			conn.Close()
		}
		return c, certError("SMTP", err)
	}
	return smtp.NewClient(conn), nil
}

// smtpError classifies an SMTP reply: 535 (bad credentials) is permanent,
// other 5xx reject this message, 4xx are transient.
func smtpError(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		switch {
		case se.Code == 535 || se.Code == 530:
			return channel.Permanent(fmt.Errorf("SMTP authentication failed: %d %s", se.Code, se.Message))
		case se.Code >= 500:
			return channel.Rejected(fmt.Errorf("SMTP refused the message: %d %s", se.Code, se.Message))
		}
	}
	return err
}
