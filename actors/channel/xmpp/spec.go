package xmpp

import "github.com/fangd/fangd/actors/channel"

// The xmpp adapter registers its configuration schema and its builder
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

// spec is the xmpp channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "xmpp", DisplayName: "XMPP", Category: "developer", Description: "XMPP client: one-to-one chat and MUC rooms",
	Filters: channel.Filters{Users: "allowed_users", Chats: "allowed_rooms"}, Account: []string{"jid"},
	Fields: []channel.Field{
		channel.SecretField("password", "Password", "XMPP_PASSWORD", true),
		channel.TextField("jid", "JID (bot@example.org)", true),
		channel.TextField("server", "Server host (default: the JID's domain)", false),
		channel.NumberField("port", "Port", "5222"),
		channel.ListField("rooms", "MUC rooms to join", false),
		channel.TextField("room_nick", "Nickname in rooms (default: JID local part)", false),
		channel.BoolField("use_tls", "Direct TLS instead of STARTTLS", "false"),
		channel.BoolField("starttls", "Require STARTTLS", "true"),
		channel.BoolField("tls_insecure_skip_verify", "Skip TLS certificate verification", "false"),
		channel.ListField("allowed_users", "Allowed bare JIDs", false),
		channel.ListField("allowed_rooms", "Rooms whose messages are answered", false),
		channel.BoolField("require_mention", "In rooms, answer only messages addressed to the bot", "true"),
	}}
