package matrix

import "github.com/fangd/fangd/actors/channel"

// The matrix adapter registers its configuration schema and its builder
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

// spec is the matrix channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "matrix", DisplayName: "Matrix", Category: "messaging", Description: "Matrix client-server API sync loop",
	Filters: channel.Filters{Users: "allowed_users", Chats: "allowed_rooms"},
	Fields: []channel.Field{
		channel.SecretField("access_token", "Access token", "MATRIX_ACCESS_TOKEN", true),
		channel.URLField("homeserver_url", "Homeserver URL", "", true),
		channel.TextField("user_id", "User id (@bot:example.org)", false),
		channel.ListField("allowed_rooms", "Allowed room ids", false),
		channel.ListField("allowed_users", "Allowed user ids", false),
		channel.BoolField("auto_join", "Accept room invites", "true"),
	}}
