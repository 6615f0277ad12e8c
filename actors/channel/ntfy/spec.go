package ntfy

import "github.com/fangd/fangd/actors/channel"

// The ntfy adapter registers its configuration schema and its builder
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

// spec is the ntfy channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "ntfy", DisplayName: "ntfy", Category: "notifications", Description: "ntfy topic: publish, and subscribe to the topic's stream",
	Account: []string{"server_url", "topic"},
	Fields: []channel.Field{channel.SecretField("token", "Access token", "NTFY_TOKEN", false), channel.TextField("topic", "Topic", true),
		channel.URLField("server_url", "Server URL", "https://ntfy.sh", false)}}
