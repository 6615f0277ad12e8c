package irc

import "github.com/fangd/fangd/actors/channel"

// The irc adapter registers its configuration schema and its builder
// with the channel runtime when the package is linked in (see
// actors/channel/adapters). Whether it takes webhooks is not declared:
// it follows from *Adapter implementing channel.WebhookReceiver.
func init() { channel.Register[*Adapter](spec, New) }

// The optional interfaces *Adapter implements, checked at compile time:
// the runtime finds them by type assertion, so a method whose signature
// drifted would otherwise silently switch the behaviour off.
var (
	_ channel.Adapter = (*Adapter)(nil)
)

// spec is the irc channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "irc", DisplayName: "IRC", Category: "developer", Description: "IRC client with TLS, SASL, reconnect and rejoin",
	Filters: channel.Filters{Users: "allowed_users", Chats: "allowed_channels"}, Account: []string{"server", "port", "nick"},
	Fields: []channel.Field{
		channel.TextField("server", "Server host (the API base address)", true),
		channel.TextField("nick", "Nickname", true),
		channel.ListField("channels", "Channels to join", false),
		channel.NumberField("port", "Port", "6697"),
		channel.BoolField("use_tls", "Use TLS", "true"),
		channel.BoolField("tls_insecure_skip_verify", "Skip TLS certificate verification", "false"),
		channel.SecretField("password", "SASL PLAIN password (SASL is then required)", "IRC_PASSWORD", false),
		channel.TextField("sasl_user", "SASL account (default: nick)", false),
		channel.SecretField("server_password", "Server password (PASS)", "IRC_SERVER_PASSWORD", false),
		channel.TextField("username", "Username (ident)", false),
		channel.TextField("realname", "Real name", false),
		channel.ListField("allowed_users", "Allowed nicks", false),
		channel.ListField("allowed_channels", "Channels whose messages are answered", false),
		channel.BoolField("require_mention", "In channels, answer only messages addressed to the nick", "true"),
	}}
