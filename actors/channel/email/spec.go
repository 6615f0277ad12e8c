package email

import "github.com/fangd/fangd/actors/channel"

// The email adapter registers its configuration schema and its builder
// with the channel runtime when the package is linked in (see
// actors/channel/adapters). Whether it takes webhooks is not declared:
// it follows from *Adapter implementing channel.WebhookReceiver.
func init() { channel.Register[*Adapter](spec, New) }

// The optional interfaces *Adapter implements, checked at compile time:
// the runtime finds them by type assertion, so a method whose signature
// drifted would otherwise silently switch the behaviour off.
// LinkFreeSender: replies go over SMTP while the IMAP link reconnects.
var (
	_ channel.Adapter        = (*Adapter)(nil)
	_ channel.LinkFreeSender = (*Adapter)(nil)
)

// spec is the email channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "email", DisplayName: "Email", Category: "messaging", Description: "IMAP IDLE for inbound mail, SMTP for replies",
	Filters: channel.Filters{Users: "allowed_senders"}, Account: []string{"imap_host", "username"},
	Fields: []channel.Field{
		channel.SecretField("password", "Password", "EMAIL_PASSWORD", true),
		channel.TextField("username", "Username (and From address)", true),
		channel.TextField("imap_host", "IMAP host", true),
		channel.TextField("smtp_host", "SMTP host", true),
		channel.NumberField("imap_port", "IMAP port", "993"),
		channel.NumberField("smtp_port", "SMTP port", "587"),
		channel.TextField("imap_security", "IMAP security: tls, starttls or none", false),
		channel.TextField("smtp_security", "SMTP security: tls, starttls or none", false),
		channel.TextField("from_address", "From address (default: username)", false),
		channel.TextField("mailbox", "Mailbox to watch", false),
		channel.TextField("ca_cert_pem", "PEM CA certificate(s) trusted for IMAP and SMTP instead of the system's (a private CA)", false),
		channel.ListField("allowed_senders", "Allowed sender addresses", false),
	}}
