package mattermost

import "github.com/fangd/fangd/actors/channel"

// The mattermost adapter registers its configuration schema and its builder
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

// spec is the mattermost channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "mattermost", DisplayName: "Mattermost", Category: "enterprise", Description: "Mattermost REST v4 and websocket events",
	Filters: channel.Filters{Users: "allowed_users", Chats: "allowed_channels"}, Account: []string{"server_url", "token"},
	Fields: []channel.Field{channel.SecretField("token", "Bot access token", "MATTERMOST_TOKEN", true), channel.URLField("server_url", "Server URL", "", true),
		channel.ListField("allowed_channels", "Allowed channel ids", false), channel.ListField("allowed_users", "Allowed user ids or names", false)}}
