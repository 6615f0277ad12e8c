package channel

import (
	"maps"
	"slices"
	"sort"
)

// FieldType is the kind of value a configuration field holds.
type FieldType string

// Field types. Secret values go to the vault and are never returned.
const (
	TypeSecret FieldType = "secret"
	TypeText   FieldType = "text"
	TypeNumber FieldType = "number"
	TypeList   FieldType = "list"
	TypeBool   FieldType = "bool"
)

// Field is one configuration key of an adapter.
type Field struct {
	Key      string    `json:"key"`
	Label    string    `json:"label"`
	Type     FieldType `json:"type"`
	Required bool      `json:"required"`
	// EnvVar is the environment variable LibreFang reads this secret from;
	// a [channels.<name>] table in config.toml may name another with
	// <key>_env, and an unset secret falls back to it.
	EnvVar      string `json:"env_var"`
	Default     string `json:"default,omitempty"`
	Placeholder string `json:"placeholder,omitempty"`
	Help        string `json:"help,omitempty"`
	Advanced    bool   `json:"advanced"`
	// Dialed marks a URL fangd connects to (an API base, a homeserver, a
	// gateway): the runtime checks it against the network policy at
	// configure time, and adapters dial it through the policy.
	Dialed bool `json:"-"`
}

// Spec is one adapter's entry in the registry: static metadata and the
// configuration schema.
type Spec struct {
	Name        string
	DisplayName string
	Category    string
	Description string
	SetupType   string // "form" or "qr"
	Fields      []Field
	// Webhook is true for adapters that take platform callbacks at
	// /channels/<name>/webhook. A built adapter never sets it: Register
	// derives it from the adapter's type implementing WebhookReceiver. The
	// catalog rows of adapters not built declare LibreFang's value.
	Webhook bool
	// Filters names the allow-list fields the runtime applies to inbound
	// messages: Users against Inbound.UserID/UserName, Chats against
	// Inbound.ChatID, Spaces against Inbound.Space. Empty: no such list.
	Filters Filters
	// Account lists the fields that identify the platform account (the
	// bot token, or host+user for mail): two channels with the same account
	// would compete for one update stream, so the second is a 409. Empty:
	// the primary secret.
	Account []string
}

// AccountFields is Account, or the primary secret.
func (s *Spec) AccountFields() []string {
	if len(s.Account) > 0 {
		return s.Account
	}
	if p := s.PrimarySecret(); p != "" {
		return []string{p}
	}
	return nil
}

// Filters names allow-list fields of a Spec.
type Filters struct{ Users, Chats, Spaces string }

// Field returns the field named key.
func (s *Spec) Field(key string) (Field, bool) {
	for _, f := range s.Fields {
		if f.Key == key {
			return f, true
		}
	}
	return Field{}, false
}

// PrimarySecret is the field the flat configure form's "token" means: the
// first required secret, else the first secret ("" when there is none).
func (s *Spec) PrimarySecret() string {
	first := ""
	for _, f := range s.Fields {
		if f.Type != TypeSecret {
			continue
		}
		if f.Required {
			return f.Key
		}
		if first == "" {
			first = f.Key
		}
	}
	return first
}

// Common fields every adapter has, appended to each Spec's own.
const (
	FieldAgent    = "agent_name"
	FieldEnabled  = "enabled"
	FieldWatchdog = "watchdog_secs"
)

// DefaultWatchdogSecs is how long a connected adapter may see no traffic
// before the runtime probes the platform.
const DefaultWatchdogSecs = 300

func commonFields() []Field {
	return []Field{
		{Key: FieldAgent, Label: "Agent (name or id) that answers messages", Type: TypeText, Placeholder: "my-agent"},
		{Key: FieldEnabled, Label: "Enabled", Type: TypeBool, Default: "true", Advanced: true},
		{Key: FieldWatchdog, Label: "Probe the platform after this many quiet seconds (0: never)", Type: TypeNumber,
			Default: "300", Advanced: true},
	}
}

// Field constructors for a Spec's schema, one per kind of field.

// SecretField is a credential: kept in the vault, never returned; env is
// the environment variable LibreFang reads it from.
func SecretField(key, label, env string, required bool) Field {
	return Field{Key: key, Label: label, Type: TypeSecret, EnvVar: env, Required: required}
}

// TextField is a plain text value.
func TextField(key, label string, required bool) Field {
	return Field{Key: key, Label: label, Type: TypeText, Required: required}
}

// URLField is a URL fangd dials (an API base, a homeserver, a gateway):
// checked against the network policy, and adapters dial it through the
// policy. Every adapter has one for its API base, so self-hosted servers
// (and tests) can be used; an optional one is an advanced field.
func URLField(key, label, def string, required bool) Field {
	return Field{Key: key, Label: label, Type: TypeText, Required: required, Default: def, Placeholder: def, Advanced: !required, Dialed: true}
}

// NumberField is an advanced integer setting with a default.
func NumberField(key, label, def string) Field {
	return Field{Key: key, Label: label, Type: TypeNumber, Default: def, Advanced: true}
}

// ListField is a list of strings (allow-lists, rooms to join).
func ListField(key, label string, required bool) Field {
	return Field{Key: key, Label: label, Type: TypeList, Required: required}
}

// BoolField is an advanced on/off setting with a default.
func BoolField(key, label, def string) Field {
	return Field{Key: key, Label: label, Type: TypeBool, Default: def, Advanced: true}
}

// catalog is every adapter LibreFang's classic CHANNEL_REGISTRY lists
// (44), in its order: the order of GET /api/channels. An adapter built
// into fangd declares its Spec in its own package and registers it
// (Register); the others keep LibreFang's row in notBuilt, so the API
// lists them with supported: false.
var catalog = []string{
	"telegram", "discord", "slack", "whatsapp", "signal", "matrix", "email", "line",
	"viber", "messenger", "threema", "keybase", "reddit", "mastodon", "bluesky", "linkedin",
	"nostr", "teams", "mattermost", "google_chat", "webex", "feishu", "dingtalk", "pumble",
	"flock", "twist", "zulip", "irc", "xmpp", "gitter", "discourse", "revolt",
	"guilded", "nextcloud", "rocketchat", "twitch", "ntfy", "gotify", "webhook", "voice",
	"mumble", "wechat", "wecom", "qq",
}

// notBuilt holds the catalog rows of the adapters no package implements
// yet. Secret keys are LibreFang's config keys without the "_env" suffix
// (bot_token_env -> bot_token); webhook_port/listen_port are gone because
// fangd takes every callback on its own API port. Webhook is declared
// here from LibreFang's catalog; for a built adapter it is derived from
// its type instead. Building one: write its package with its Spec and
// Register call, link it in actors/channel/adapters, and delete its row
// here (Register refuses a name that still has one).
var notBuilt = []Spec{
	{Name: "signal", DisplayName: "Signal", Category: "messaging", Description: "Signal through a signal-cli REST API server",
		Account: []string{"api_url", "phone_number"},
		Fields:  []Field{URLField("api_url", "signal-cli REST API URL", "", true), TextField("phone_number", "Phone number", true)}},
	{Name: "line", DisplayName: "LINE", Category: "messaging", Description: "LINE Messaging API", Webhook: true,
		Fields: []Field{SecretField("channel_secret", "Channel secret", "LINE_CHANNEL_SECRET", true),
			SecretField("access_token", "Channel access token", "LINE_CHANNEL_ACCESS_TOKEN", true),
			URLField("api_url", "API base URL", "https://api.line.me", false)}},
	{Name: "viber", DisplayName: "Viber", Category: "messaging", Description: "Viber REST bot API", Webhook: true,
		Fields: []Field{SecretField("auth_token", "Auth token", "VIBER_AUTH_TOKEN", true), TextField("webhook_url", "Public webhook URL", false),
			URLField("api_url", "API base URL", "https://chatapi.viber.com/pa", false)}},
	{Name: "messenger", DisplayName: "Messenger", Category: "messaging", Description: "Facebook Messenger platform", Webhook: true,
		Fields: []Field{SecretField("page_token", "Page access token", "MESSENGER_PAGE_TOKEN", true),
			SecretField("verify_token", "Webhook verify token", "MESSENGER_VERIFY_TOKEN", false),
			SecretField("app_secret", "App secret (X-Hub-Signature-256)", "MESSENGER_APP_SECRET", false),
			URLField("api_url", "Graph API base URL", "https://graph.facebook.com/v21.0", false)}},
	{Name: "threema", DisplayName: "Threema", Category: "messaging", Description: "Threema Gateway", Webhook: true,
		Fields: []Field{SecretField("secret", "API secret", "THREEMA_SECRET", true), TextField("threema_id", "Threema gateway id", true),
			URLField("api_url", "Gateway API base URL", "https://msgapi.threema.ch", false)}},
	{Name: "keybase", DisplayName: "Keybase", Category: "messaging", Description: "Keybase chat bot",
		Fields: []Field{SecretField("paperkey", "Paper key", "KEYBASE_PAPERKEY", true), TextField("username", "Username", true),
			ListField("allowed_teams", "Allowed teams", false), URLField("api_url", "API base URL", "https://keybase.io", false)}},
	{Name: "reddit", DisplayName: "Reddit", Category: "social", Description: "Reddit bot account",
		Fields: []Field{SecretField("client_secret", "Client secret", "REDDIT_CLIENT_SECRET", true), SecretField("password", "Password", "REDDIT_PASSWORD", true),
			TextField("client_id", "Client id", true), TextField("username", "Username", true), ListField("subreddits", "Subreddits", false),
			URLField("api_url", "OAuth API base URL", "https://oauth.reddit.com", false)}},
	{Name: "mastodon", DisplayName: "Mastodon", Category: "social", Description: "Mastodon account (mentions and direct messages)",
		Fields: []Field{SecretField("access_token", "Access token", "MASTODON_ACCESS_TOKEN", true), URLField("instance_url", "Instance URL", "", true)}},
	{Name: "bluesky", DisplayName: "Bluesky", Category: "social", Description: "Bluesky (AT Protocol) account",
		Fields: []Field{SecretField("app_password", "App password", "BLUESKY_APP_PASSWORD", true), TextField("identifier", "Handle or DID", true),
			URLField("service_url", "PDS service URL", "https://bsky.social", false)}},
	{Name: "linkedin", DisplayName: "LinkedIn", Category: "social", Description: "LinkedIn organization messaging",
		Fields: []Field{SecretField("access_token", "Access token", "LINKEDIN_ACCESS_TOKEN", true), TextField("organization_id", "Organization id", true),
			URLField("api_url", "API base URL", "https://api.linkedin.com", false)}},
	{Name: "nostr", DisplayName: "Nostr", Category: "social", Description: "Nostr direct messages over relays",
		Fields: []Field{SecretField("private_key", "Private key", "NOSTR_PRIVATE_KEY", true), ListField("relays", "Relay URLs (the API base URLs)", false)}},
	{Name: "webex", DisplayName: "Webex", Category: "enterprise", Description: "Webex bot",
		Fields: []Field{SecretField("bot_token", "Bot token", "WEBEX_BOT_TOKEN", true), ListField("allowed_rooms", "Allowed rooms", false),
			URLField("api_url", "API base URL", "https://webexapis.com/v1", false)}},
	{Name: "feishu", DisplayName: "Feishu / Lark", Category: "enterprise", Description: "Feishu open platform bot", Webhook: true,
		Fields: []Field{SecretField("app_secret", "App secret", "FEISHU_APP_SECRET", true), TextField("app_id", "App id", true),
			URLField("api_url", "Open API base URL", "https://open.feishu.cn/open-apis", false)}},
	{Name: "dingtalk", DisplayName: "DingTalk", Category: "enterprise", Description: "DingTalk robot (webhook or stream mode)", Webhook: true,
		Fields: []Field{SecretField("app_key", "App key", "DINGTALK_APP_KEY", false), SecretField("app_secret", "App secret", "DINGTALK_APP_SECRET", false),
			SecretField("access_token", "Robot access token", "DINGTALK_ACCESS_TOKEN", false), SecretField("secret", "Signing secret", "DINGTALK_SECRET", false),
			TextField("receive_mode", "Receive mode: webhook or stream", false), URLField("api_url", "API base URL", "https://api.dingtalk.com", false)}},
	{Name: "pumble", DisplayName: "Pumble", Category: "enterprise", Description: "Pumble bot", Webhook: true,
		Fields: []Field{SecretField("bot_token", "Bot token", "PUMBLE_BOT_TOKEN", true), URLField("api_url", "API base URL", "https://pumble-api-keys.addons.marketplace.cake.com", false)}},
	{Name: "flock", DisplayName: "Flock", Category: "enterprise", Description: "Flock bot", Webhook: true,
		Fields: []Field{SecretField("bot_token", "Bot token", "FLOCK_BOT_TOKEN", true), URLField("api_url", "API base URL", "https://api.flock.com/v1", false)}},
	{Name: "twist", DisplayName: "Twist", Category: "enterprise", Description: "Twist integration",
		Fields: []Field{SecretField("token", "Token", "TWIST_TOKEN", true), TextField("workspace_id", "Workspace id", true), ListField("allowed_channels", "Allowed channels", false),
			URLField("api_url", "API base URL", "https://api.twist.com/api/v3", false)}},
	{Name: "zulip", DisplayName: "Zulip", Category: "enterprise", Description: "Zulip bot",
		Fields: []Field{SecretField("api_key", "API key", "ZULIP_API_KEY", true), URLField("server_url", "Server URL", "", true), TextField("bot_email", "Bot email", true),
			ListField("streams", "Streams", false)}},
	{Name: "gitter", DisplayName: "Gitter", Category: "developer", Description: "Gitter room bot",
		Fields: []Field{SecretField("token", "Token", "GITTER_TOKEN", true), TextField("room_id", "Room id", true), URLField("api_url", "API base URL", "https://api.gitter.im/v1", false)}},
	{Name: "discourse", DisplayName: "Discourse", Category: "developer", Description: "Discourse forum bot",
		Fields: []Field{SecretField("api_key", "API key", "DISCOURSE_API_KEY", true), URLField("base_url", "Forum base URL", "", true),
			TextField("api_username", "API username", false), ListField("categories", "Categories", false)}},
	{Name: "revolt", DisplayName: "Revolt", Category: "developer", Description: "Revolt bot",
		Fields: []Field{SecretField("bot_token", "Bot token", "REVOLT_BOT_TOKEN", true), URLField("api_url", "API base URL", "https://api.revolt.chat", false)}},
	{Name: "guilded", DisplayName: "Guilded", Category: "developer", Description: "Guilded bot",
		Fields: []Field{SecretField("bot_token", "Bot token", "GUILDED_BOT_TOKEN", true), ListField("server_ids", "Server ids", false),
			URLField("api_url", "API base URL", "https://www.guilded.gg/api/v1", false)}},
	{Name: "nextcloud", DisplayName: "Nextcloud Talk", Category: "developer", Description: "Nextcloud Talk bot",
		Fields: []Field{SecretField("token", "Token", "NEXTCLOUD_TOKEN", true), URLField("server_url", "Server URL", "", true), ListField("allowed_rooms", "Allowed rooms", false)}},
	{Name: "rocketchat", DisplayName: "Rocket.Chat", Category: "developer", Description: "Rocket.Chat bot",
		Fields: []Field{SecretField("token", "Token", "ROCKETCHAT_TOKEN", true), URLField("server_url", "Server URL", "", true), TextField("user_id", "User id", true),
			ListField("allowed_channels", "Allowed channels", false)}},
	{Name: "twitch", DisplayName: "Twitch", Category: "developer", Description: "Twitch chat bot",
		Fields: []Field{SecretField("oauth_token", "OAuth token", "TWITCH_OAUTH_TOKEN", true), TextField("nick", "Nick", true), ListField("channels", "Channels", true),
			URLField("server", "Chat server", "irc.chat.twitch.tv", false)}},
	{Name: "voice", DisplayName: "Voice", Category: "media", Description: "Voice over a websocket with speech-to-text and text-to-speech",
		Fields: []Field{SecretField("api_key", "API key", "OPENAI_API_KEY", true), URLField("stt_url", "Speech-to-text URL", "", false),
			URLField("tts_url", "Text-to-speech URL", "", false), TextField("tts_voice", "Voice", false), NumberField("buffer_threshold", "Buffer threshold", "")}},
	{Name: "mumble", DisplayName: "Mumble", Category: "notifications", Description: "Mumble text chat",
		Fields: []Field{SecretField("password", "Password", "MUMBLE_PASSWORD", false), TextField("host", "Host (the server address)", true), TextField("username", "Username", true),
			NumberField("port", "Port", "64738"), TextField("channel", "Channel", false)}},
	{Name: "wechat", DisplayName: "WeChat", Category: "messaging", SetupType: "qr", Description: "WeChat bot",
		Fields: []Field{SecretField("bot_token", "Bot token", "WECHAT_BOT_TOKEN", false), ListField("allowed_users", "Allowed users", false),
			URLField("api_url", "API base URL", "", false)}},
	{Name: "wecom", DisplayName: "WeCom", Category: "messaging", Description: "WeCom (WeChat Work) bot", Webhook: true,
		Fields: []Field{SecretField("secret", "Bot secret", "WECOM_BOT_SECRET", true), SecretField("token", "Callback token", "WECOM_CALLBACK_TOKEN", true),
			SecretField("encoding_aes_key", "Encoding AES key", "WECOM_ENCODING_AES_KEY", true), TextField("bot_id", "Bot id", true),
			TextField("mode", "Mode: websocket or callback", false), URLField("api_url", "API base URL", "https://qyapi.weixin.qq.com/cgi-bin", false)}},
	{Name: "qq", DisplayName: "QQ", Category: "messaging", Description: "QQ bot",
		Fields: []Field{SecretField("app_secret", "App secret", "QQ_BOT_APP_SECRET", true), TextField("app_id", "App id", true), ListField("allowed_users", "Allowed users", false),
			URLField("api_url", "API base URL", "https://api.sgroup.qq.com", false)}},
}

// registry indexes the Specs and Builders of the adapters fangd knows.
// The package's one registry (reg) is filled while packages initialise
// (the catalog rows, then each linked adapter's Register) and only read
// afterwards, so it needs no lock. It holds static facts about the code
// linked into the binary, not runtime state: every node of a cluster has
// the same.
type registry struct {
	specs    map[string]*Spec
	builders Builders
}

var reg = newRegistry(notBuilt)

func newRegistry(rows []Spec) *registry {
	r := &registry{specs: map[string]*Spec{}, builders: Builders{}}
	for _, s := range rows {
		r.add(s)
	}
	return r
}

// add completes s with what every Spec has and indexes it.
func (r *registry) add(s Spec) {
	if _, dup := r.specs[s.Name]; dup {
		panic("channel: adapter " + s.Name + " is registered twice (a built adapter's row must leave notBuilt in registry.go)")
	}
	if s.SetupType == "" {
		s.SetupType = "form"
	}
	s.Fields = append(slices.Clip(s.Fields), commonFields()...)
	r.specs[s.Name] = &s
}

// Register adds a built adapter: its schema and its Builder. Each adapter
// package calls it from init, so linking the package (one import in
// actors/channel/adapters) is what builds the adapter in. A is the
// adapter's type: spec.Webhook is set from whether A implements
// WebhookReceiver, and must not be declared by hand. Register panics on
// a name registered twice or a hand-set Webhook: both are programming
// errors that must fail at start, not silently change the API.
func Register[A Adapter](spec Spec, build Builder) { register[A](reg, spec, build) }

func register[A Adapter](r *registry, spec Spec, build Builder) {
	if spec.Webhook {
		panic("channel: adapter " + spec.Name + " declares Webhook; it is derived from implementing WebhookReceiver")
	}
	if spec.Name == "" || build == nil {
		panic("channel: Register needs a name and a Builder")
	}
	var zero A
	_, spec.Webhook = any(zero).(WebhookReceiver)
	r.add(spec)
	r.builders[spec.Name] = build
}

// Registered returns the Builders of every adapter linked into this
// binary (the ones that called Register).
func Registered() Builders { return maps.Clone(reg.builders) }

// Specs returns every registry entry: LibreFang's catalog in its order,
// then any registered adapter LibreFang does not list, by name.
func Specs() []*Spec { return reg.list() }

func (r *registry) list() []*Spec {
	out := make([]*Spec, 0, len(r.specs))
	listed := make(map[string]bool, len(catalog))
	for _, n := range catalog {
		if s, ok := r.specs[n]; ok {
			out = append(out, s)
			listed[n] = true
		}
	}
	var extra []*Spec
	for n, s := range r.specs {
		if !listed[n] {
			extra = append(extra, s)
		}
	}
	sort.Slice(extra, func(i, j int) bool { return extra[i].Name < extra[j].Name })
	return append(out, extra...)
}

// Lookup returns the registry entry for an adapter name.
func Lookup(adapter string) (*Spec, bool) {
	s, ok := reg.specs[adapter]
	return s, ok
}

// Builders maps adapter names to their constructors: the adapters built
// into this fangd. An adapter in the registry without a Builder is listed
// with supported: false.
type Builders map[string]Builder

// Names returns the adapter names in b, sorted.
func (b Builders) Names() []string {
	out := make([]string, 0, len(b))
	for n := range b {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
