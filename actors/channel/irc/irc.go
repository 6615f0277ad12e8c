// Package irc is the IRC adapter: a small client for the RFC 1459/2812 line
// protocol with IRCv3 capability negotiation for SASL PLAIN, TLS, a server
// password (PASS), PING/PONG, rejoin after a KICK and on every reconnect,
// and replies split to the 512-byte line limit.
//
// A SASL password makes SASL mandatory: when the server does not offer it
// (its services are down) or it fails, registration fails and the runtime
// backs off and retries; the password is never sent another way, and the
// bot never runs unidentified. A server password is a separate field.
//
// It is hand-written because no IRC client module (ergochat/irc-go,
// lrstanley/girc, ...) can be fetched from this project's Go module proxy;
// the protocol subset a bot needs is small.
package irc

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/fangd/fangd/actors/channel"
)

// maxLineBytes is the payload budget of one PRIVMSG: 512 bytes per line
// minus CRLF and the prefix the server adds when relaying
// (":nick!user@host PRIVMSG <target> :"), which we cannot see; 350 leaves
// room for long hostmasks.
const maxLineBytes = 350

// maxInLine bounds one line from the server: 512 bytes (RFC 1459) plus
// up to 8191 bytes of IRCv3 message tags. A longer line is a broken or
// hostile server; without a bound, one line without LF would grow memory
// without end.
const maxInLine = 8191 + 512

// readLine reads one line of at most maxInLine bytes.
func readLine(r *bufio.Reader) (string, error) {
	b, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", fmt.Errorf("the IRC server sent a line longer than %d bytes", maxInLine)
	}
	return string(b), err
}

// Adapter is one IRC connection.
type Adapter struct {
	addr, nick, user, realname string
	saslUser, password         string
	serverPassword             string
	useTLS, insecure           bool
	channels                   []string
	requireMention             bool

	// lines paces what we write: servers disconnect clients that flood
	// (ngircd, like most, allows a short burst, then about one line per
	// second or two).
	lines *rate.Limiter

	mu   sync.Mutex
	conn net.Conn
	w    *bufio.Writer
	me   string // our current nick
	pong chan string
}

// New builds the adapter (no I/O).
func New(cfg *channel.Config) (channel.Adapter, error) {
	a := &Adapter{nick: cfg.Text("nick"), user: cfg.Text("username"), realname: cfg.Text("realname"),
		saslUser: cfg.Text("sasl_user"), password: cfg.Secret("password"), serverPassword: cfg.Secret("server_password"), useTLS: cfg.Bool("use_tls"),
		insecure: cfg.Bool("tls_insecure_skip_verify"), requireMention: cfg.Bool("require_mention"),
		lines: rate.NewLimiter(rate.Every(700*time.Millisecond), 5)}
	host := cfg.Text("server")
	if host == "" || strings.ContainsAny(host, "/ ") {
		return nil, &channel.FieldError{Field: "server", Msg: "must be a host name or address"}
	}
	port := cfg.Int("port")
	if port <= 0 || port > 65535 {
		return nil, &channel.FieldError{Field: "port", Msg: "must be between 1 and 65535"}
	}
	a.addr = net.JoinHostPort(host, strconv.Itoa(port))
	if !validNick(a.nick) {
		return nil, &channel.FieldError{Field: "nick", Msg: "is not a valid IRC nickname"}
	}
	for _, c := range cfg.List("channels") {
		if !strings.HasPrefix(c, "#") && !strings.HasPrefix(c, "&") || strings.ContainsAny(c, " ,\x07") {
			return nil, &channel.FieldError{Field: "channels", Msg: fmt.Sprintf("%q is not a channel name", c)}
		}
		a.channels = append(a.channels, c)
	}
	if a.user == "" {
		a.user = a.nick
	}
	if a.realname == "" {
		a.realname = "fangd"
	}
	if a.saslUser == "" {
		a.saslUser = a.nick
	}
	return a, nil
}

func validNick(n string) bool {
	if n == "" || len(n) > 30 || strings.ContainsAny(n, " ,*?!@#:.\r\n") || n[0] == '$' || (n[0] >= '0' && n[0] <= '9') || n[0] == '-' {
		return false
	}
	return true
}

// Capabilities: IRC has no threads, edits or markup worth relying on; the
// length limit is per line and Send splits further by bytes.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: 2000, Markdown: "none",
		Pace: channel.Pace{PerSecond: 1, Burst: 3}}
}

// message is one parsed protocol line.
type message struct {
	prefix, command string
	params          []string
}

func (m *message) nick() string {
	n, _, _ := strings.Cut(m.prefix, "!")
	return n
}

func (m *message) param(i int) string {
	if i < len(m.params) {
		return m.params[i]
	}
	return ""
}

// parse reads one line: [@tags] [:prefix] COMMAND params... [:trailing].
func parse(line string) (*message, error) {
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "@") { // IRCv3 message tags: not used
		_, rest, ok := strings.Cut(line, " ")
		if !ok {
			return nil, errors.New("tags without a command")
		}
		line = rest
	}
	m := &message{}
	if strings.HasPrefix(line, ":") {
		p, rest, ok := strings.Cut(line[1:], " ")
		if !ok {
			return nil, errors.New("prefix without a command")
		}
		m.prefix, line = p, rest
	}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		if strings.HasPrefix(line, ":") {
			m.params = append(m.params, line[1:])
			break
		}
		word, rest, _ := strings.Cut(line, " ")
		if m.command == "" {
			m.command = strings.ToUpper(word)
		} else if word != "" {
			m.params = append(m.params, word)
		}
		line = rest
	}
	if m.command == "" {
		return nil, errors.New("empty line")
	}
	if !validCommand(m.command) {
		return nil, errors.New("not an IRC command")
	}
	return m, nil
}

// validCommand: a command is letters, or a three-digit numeric reply
// (RFC 2812 2.3.1).
func validCommand(c string) bool {
	if len(c) == 3 && c[0] >= '0' && c[0] <= '9' && c[1] >= '0' && c[1] <= '9' && c[2] >= '0' && c[2] <= '9' {
		return true
	}
	for i := 0; i < len(c); i++ {
		if (c[i] < 'A' || c[i] > 'Z') && (c[i] < 'a' || c[i] > 'z') {
			return false
		}
	}
	return c != ""
}

// lineSafe neutralises the bytes that end or corrupt an IRC line: CR and
// LF would end it early and let the rest run as a command of its own
// ("hi\rJOIN #x"), NUL is forbidden anywhere in a message (RFC 1459
// 2.3.1). Each becomes a space. Other control characters are IRC's own
// formatting codes (bold, colour, CTCP) and stay.
func lineSafe(s string) string {
	if !strings.ContainsAny(s, "\r\n\x00") {
		return s
	}
	// Byte by byte: IRC text need not be UTF-8, and other bytes stay as
	// they are.
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' || c == 0 {
			b[i] = ' '
		}
	}
	return string(b)
}

// write sends one line (paced). Whatever the line carries (a reply, a
// token echoed back in PONG, a channel name from a KICK) goes through
// lineSafe, so nothing can smuggle a second command onto the wire.
func (a *Adapter) write(ctx context.Context, line string) error {
	if err := a.lines.Wait(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == nil {
		return errors.New("not connected to the IRC server")
	}
	a.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := a.w.WriteString(lineSafe(line) + "\r\n"); err != nil {
		return err
	}
	return a.w.Flush()
}

func (a *Adapter) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{Timeout: 20 * time.Second, KeepAlive: 60 * time.Second}
	if !a.useTLS {
		return d.DialContext(ctx, "tcp", a.addr)
	}
	host, _, _ := net.SplitHostPort(a.addr)
	td := &tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: host, InsecureSkipVerify: a.insecure, MinVersion: tls.VersionTLS12}}
	return td.DialContext(ctx, "tcp", a.addr)
}

// Run connects, registers (CAP/SASL or PASS, NICK, USER), joins the
// channels and reads until the connection ends.
func (a *Adapter) Run(ctx context.Context, h channel.Host) error {
	conn, err := a.dial(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.conn, a.w, a.me, a.pong = conn, bufio.NewWriter(conn), a.nick, make(chan string, 4)
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.conn = nil
		a.mu.Unlock()
		conn.Close()
	}()
	stop := context.AfterFunc(ctx, func() {
		a.writeNow("QUIT :fangd stopping")
		conn.Close()
	})
	defer stop()

	r := bufio.NewReaderSize(conn, maxInLine)
	if err := a.register(ctx, r); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	h.Connected(channel.Identity{ID: a.me, Name: a.me})
	for _, c := range a.channels {
		if err := a.write(ctx, "JOIN "+c); err != nil {
			return err
		}
	}
	if !a.holdsNick() {
		regainCtx, stopRegain := context.WithCancel(ctx)
		defer stopRegain()
		go a.regainNick(regainCtx)
	}
	for {
		conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := readLine(r)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("connection to %s lost: %w", a.addr, err)
		}
		m, err := parse(line)
		if err != nil {
			continue
		}
		if err := a.handle(ctx, h, m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// writeNow writes without pacing (QUIT on the way out).
func (a *Adapter) writeNow(line string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn != nil {
		a.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		a.w.WriteString(lineSafe(line) + "\r\n")
		a.w.Flush()
	}
}

// errNoSASL is why registration stopped when SASL was required but the
// server did not offer it or refused it. It is transient: the usual cause is
// the network's services being down, and the runtime retries with backoff.
var errNoSASL = errors.New("the IRC server does not offer SASL (are its services down?); not connecting unidentified")

// register negotiates SASL when a SASL password is configured (and then
// insists on it), sends PASS when a server password is, then NICK/USER,
// until RPL_WELCOME.
func (a *Adapter) register(ctx context.Context, r *bufio.Reader) error {
	a.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	sasl := a.password != ""
	if sasl {
		if err := a.write(ctx, "CAP LS 302"); err != nil {
			return err
		}
	}
	usedPass := a.serverPassword != ""
	if usedPass {
		if err := a.write(ctx, "PASS :"+a.serverPassword); err != nil {
			return err
		}
	}
	sendIdentity := func() error {
		if err := a.write(ctx, "NICK "+a.me); err != nil {
			return err
		}
		return a.write(ctx, "USER "+a.user+" 0 * :"+a.realname)
	}
	if !sasl {
		if err := sendIdentity(); err != nil {
			return err
		}
	}
	capDone := !sasl
	offered, identified := false, false
	for {
		line, err := readLine(r)
		if err != nil {
			// Transient even after a PASS: a server that refuses the
			// password says so first (ERROR, 464, handled below), while a
			// link that merely drops here (a restart, the network) must
			// be retried, not stop the channel for good.
			if usedPass {
				return fmt.Errorf("registration on %s: %w (the server closed the link without a reason; a wrong server password?)", a.addr, err)
			}
			return fmt.Errorf("registration on %s: %w", a.addr, err)
		}
		m, err := parse(line)
		if err != nil {
			continue
		}
		switch m.command {
		case "PING":
			a.write(ctx, "PONG :"+m.param(len(m.params)-1))
		case "CAP":
			sub := strings.ToUpper(m.param(1))
			switch {
			case sub == "LS" && !capDone:
				if hasCap(m.param(len(m.params)-1), "sasl") {
					offered = true
				}
				if m.param(2) == "*" { // more CAP LS lines follow
					continue
				}
				capDone = true
				if !offered {
					a.write(ctx, "CAP END")
					return errNoSASL
				}
				if err := a.write(ctx, "CAP REQ :sasl"); err != nil {
					return err
				}
			case sub == "ACK":
				if err := a.write(ctx, "AUTHENTICATE PLAIN"); err != nil {
					return err
				}
			case sub == "NAK":
				a.write(ctx, "CAP END")
				return errNoSASL
			}
		case "421": // ERR_UNKNOWNCOMMAND: a server without CAP (or AUTHENTICATE)
			if sasl && (strings.EqualFold(m.param(1), "CAP") || strings.EqualFold(m.param(1), "AUTHENTICATE")) {
				return errNoSASL
			}
		case "AUTHENTICATE":
			if m.param(0) == "+" {
				payload := base64.StdEncoding.EncodeToString([]byte(a.saslUser + "\x00" + a.saslUser + "\x00" + a.password))
				if err := a.write(ctx, "AUTHENTICATE "+payload); err != nil {
					return err
				}
			}
		case "903": // RPL_SASLSUCCESS
			identified = true
			a.write(ctx, "CAP END")
			if err := sendIdentity(); err != nil {
				return err
			}
		case "904", "905", "906", "908": // SASL failed / aborted / mechanisms
			// Not permanent: with services down some servers answer 904
			// to every attempt; the backoff retries until they are back
			// (and a wrong password shows in last_error meanwhile).
			a.write(ctx, "CAP END")
			return fmt.Errorf("SASL authentication failed (%s): %s", m.command, m.param(len(m.params)-1))
		case "464": // ERR_PASSWDMISMATCH
			return channel.Permanent(errors.New("the IRC server rejected the password"))
		case "465": // ERR_YOUREBANNEDCREEP
			return channel.Permanent(fmt.Errorf("banned from the IRC server: %s", m.param(len(m.params)-1)))
		case "432": // ERR_ERRONEUSNICKNAME
			return channel.Permanent(fmt.Errorf("the IRC server refused the nick %s", a.me))
		case "433", "436": // nick in use: try nick_, nick__
			if len(a.me) >= len(a.nick)+3 {
				return errors.New("the nick and its alternatives are in use")
			}
			a.me += "_"
			if err := a.write(ctx, "NICK "+a.me); err != nil {
				return err
			}
		case "ERROR":
			text := m.param(len(m.params) - 1)
			if usedPass || strings.Contains(strings.ToLower(text), "password") {
				return channel.Permanent(fmt.Errorf("the IRC server refused us: %s", text))
			}
			return fmt.Errorf("the IRC server closed the link: %s", text)
		case "001": // RPL_WELCOME: registered
			if sasl && !identified {
				// A server that registers us before SASL finished (it
				// ignored CAP): we would run unidentified.
				return errNoSASL
			}
			if nick := m.param(0); nick != "" {
				a.mu.Lock()
				a.me = nick
				a.mu.Unlock()
			}
			return nil
		}
	}
}

func hasCap(list, name string) bool {
	for _, c := range strings.Fields(list) {
		c, _, _ = strings.Cut(c, "=")
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}

// handle reacts to one line after registration.
func (a *Adapter) handle(ctx context.Context, h channel.Host, m *message) error {
	switch m.command {
	case "PING":
		h.Alive()
		return a.write(ctx, "PONG :"+m.param(len(m.params)-1))
	case "PONG":
		h.Alive()
		select {
		case a.pong <- m.param(len(m.params) - 1):
		default:
		}
	case "KICK":
		if strings.EqualFold(m.param(1), a.current()) {
			return a.write(ctx, "JOIN "+m.param(0))
		}
	case "NICK":
		switch {
		case strings.EqualFold(m.nick(), a.current()):
			a.mu.Lock()
			a.me = m.param(0)
			a.mu.Unlock()
			h.Connected(channel.Identity{ID: m.param(0), Name: m.param(0)})
		case strings.EqualFold(m.nick(), a.nick):
			return a.askForNick(ctx)
		}
	case "QUIT":
		if strings.EqualFold(m.nick(), a.nick) {
			return a.askForNick(ctx)
		}
	case "ERROR":
		return fmt.Errorf("the IRC server closed the link: %s", m.param(len(m.params)-1))
	case "PRIVMSG":
		return a.privmsg(ctx, h, m)
	default:
		h.Alive()
	}
	return nil
}

// regainEvery is how often a bot registered under an alternative nick
// asks for its own again (ZNC's keepnick asks every 30 s). The usual holder
// is a dropped session of its own that the server has not timed out yet;
// users write to the configured nick, so the bot must not stay on nick_.
var regainEvery = 30 * time.Second

// regainNick asks for the configured nick until the bot holds it or the
// link ends. The server's NICK answer (handle) updates the identity; a
// refusal (433) is only a line to ignore. Seeing the holder quit or change
// nick asks at once (handle), where the bot shares a channel with it.
func (a *Adapter) regainNick(ctx context.Context) {
	t := time.NewTicker(regainEvery)
	defer t.Stop()
	for !a.holdsNick() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if a.askForNick(ctx) != nil {
				return
			}
		}
	}
}

func (a *Adapter) askForNick(ctx context.Context) error {
	if a.holdsNick() {
		return nil
	}
	return a.write(ctx, "NICK "+a.nick)
}

func (a *Adapter) holdsNick() bool { return strings.EqualFold(a.current(), a.nick) }

func (a *Adapter) current() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.me
}

func (a *Adapter) privmsg(ctx context.Context, h channel.Host, m *message) error {
	target, text, from := m.param(0), m.param(1), m.nick()
	me := a.current()
	if strings.EqualFold(from, me) || text == "" {
		return nil
	}
	if strings.HasPrefix(text, "\x01") { // CTCP (ACTION, VERSION...): not a message to answer
		return nil
	}
	in := channel.Inbound{UserID: from, UserName: from, Text: text}
	if strings.EqualFold(target, me) {
		in.ChatID, in.Direct = from, true
	} else {
		in.ChatID = target
		if a.requireMention {
			rest, ok := channel.Addressed(text, me)
			if !ok {
				h.Alive()
				return nil
			}
			in.Text = rest
		}
	}
	return h.Deliver(ctx, in)
}

// Send writes the text as PRIVMSG lines: one per line of text, each cut to
// the byte budget on a rune boundary; write neutralises what is left (NUL).
func (a *Adapter) Send(ctx context.Context, m channel.Outbound) (string, error) {
	if strings.ContainsAny(m.ChatID, " ,\r\n\x00") || m.ChatID == "" {
		return "", channel.Rejected(fmt.Errorf("%q is not an IRC target", m.ChatID))
	}
	// A bare CR is a line break too (as the server would read it), so
	// "before\rJOIN #x" is two lines of text, never a command.
	lines := strings.FieldsFunc(m.Text, func(r rune) bool { return r == '\n' || r == '\r' })
	for _, line := range lines {
		if strings.TrimSpace(line) == "" {
			continue
		}
		for _, piece := range cutBytes(line, maxLineBytes) {
			if err := a.write(ctx, "PRIVMSG "+m.ChatID+" :"+piece); err != nil {
				return "", err
			}
		}
	}
	return "", nil
}

// cutBytes splits s into pieces of at most n bytes, preferring spaces,
// which IRC would show at the end of a line: they are dropped.
func cutBytes(s string, n int) []string {
	out := channel.SplitBytes(s, n, ' ')
	for i := range out {
		out[i] = strings.TrimRight(out[i], " ")
	}
	return out
}

// Probe sends a PING on the live connection and waits for its PONG.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	a.mu.Lock()
	pong, me := a.pong, a.me
	a.mu.Unlock()
	if pong == nil {
		return channel.Identity{}, errors.New("not connected to the IRC server")
	}
	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := a.write(ctx, "PING :"+token); err != nil {
		return channel.Identity{}, err
	}
	for {
		select {
		case got := <-pong:
			if got == token {
				return channel.Identity{ID: me, Name: me}, nil
			}
		case <-ctx.Done():
			return channel.Identity{}, errors.New("the IRC server did not answer PING")
		}
	}
}
