package channel

import "sort"

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
	// /channels/<name>/webhook.
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

func secret(key, label, env string, required bool) Field {
	return Field{Key: key, Label: label, Type: TypeSecret, EnvVar: env, Required: required}
}

func text(key, label string, required bool) Field {
	return Field{Key: key, Label: label, Type: TypeText, Required: required}
}

// baseURL is the API base URL field every adapter has, so self-hosted
// servers (and tests) can be used.
func baseURL(key, label, def string, required bool) Field {
	return Field{Key: key, Label: label, Type: TypeText, Required: required, Default: def, Placeholder: def, Advanced: !required, Dialed: true}
}

func number(key, label, def string) Field {
	return Field{Key: key, Label: label, Type: TypeNumber, Default: def, Advanced: true}
}

func list(key, label string, required bool) Field {
	return Field{Key: key, Label: label, Type: TypeList, Required: required}
}

func boolean(key, label, def string) Field {
	return Field{Key: key, Label: label, Type: TypeBool, Default: def, Advanced: true}
}

// registry is every adapter LibreFang's classic CHANNEL_REGISTRY lists (44),
// in its order. Secret keys are LibreFang's config keys without the "_env"
// suffix (bot_token_env -> bot_token); webhook_port/listen_port are gone
// because fangd takes every callback on its own API port. Whether an
// adapter is built is not recorded here: it is whether a Builder is
// registered for it (see actors/channel/adapters).
var registry = []Spec{
	{Name: "telegram", DisplayName: "Telegram", Category: "messaging", Description: "Telegram Bot API: long polling, or webhook mode with a secret token",
		Webhook: true, Filters: Filters{Users: "allowed_users", Chats: "allowed_chats"},
		Fields: []Field{
			secret("bot_token", "Bot token", "TELEGRAM_BOT_TOKEN", true),
			baseURL("api_url", "Bot API base URL", "https://api.telegram.org", false),
			list("allowed_users", "Allowed user ids or usernames", false),
			list("allowed_chats", "Allowed chat ids", false),
			number("poll_interval_secs", "Long-poll timeout (seconds)", "30"),
			text("webhook_url", "Public webhook URL (enables webhook mode)", false),
			secret("webhook_secret", "Webhook secret token", "TELEGRAM_WEBHOOK_SECRET", false),
		}},
	{Name: "discord", DisplayName: "Discord", Category: "messaging", Description: "Discord bot over the gateway websocket and REST API",
		Filters: Filters{Users: "allowed_users", Chats: "allowed_channels", Spaces: "allowed_guilds"},
		Fields: []Field{
			secret("bot_token", "Bot token", "DISCORD_BOT_TOKEN", true),
			baseURL("api_url", "REST API base URL (discordgo speaks v9)", "https://discord.com/api/v9", false),
			list("allowed_guilds", "Allowed guild ids", false),
			list("allowed_channels", "Allowed channel ids", false),
			list("allowed_users", "Allowed user ids or names", false),
			number("intents", "Gateway intents bitmask", "37377"),
			boolean("require_mention", "In servers, answer only messages that mention the bot", "true"),
		}},
	{Name: "slack", DisplayName: "Slack", Category: "messaging", Description: "Slack app over Socket Mode (or the Events API webhook) and the Web API",
		Webhook: true, Filters: Filters{Users: "allowed_users", Chats: "allowed_channels", Spaces: "allowed_teams"}, Account: []string{"bot_token"},
		Fields: []Field{
			secret("bot_token", "Bot token (xoxb-)", "SLACK_BOT_TOKEN", true),
			secret("app_token", "App-level token (xapp-) for Socket Mode", "SLACK_APP_TOKEN", false),
			secret("signing_secret", "Signing secret (Events API webhook mode)", "SLACK_SIGNING_SECRET", false),
			baseURL("api_url", "Web API base URL", "https://slack.com/api/", false),
			list("allowed_channels", "Allowed channel ids", false),
			list("allowed_users", "Allowed user ids", false),
			list("allowed_teams", "Allowed team ids", false),
		}},
	{Name: "whatsapp", DisplayName: "WhatsApp", Category: "messaging", SetupType: "qr", Description: "WhatsApp Cloud API (Graph) with webhook verification; QR login through a WhatsApp Web gateway",
		Webhook: true, Filters: Filters{Users: "allowed_users"}, Account: []string{"phone_number_id"},
		Fields: []Field{
			secret("access_token", "Cloud API access token", "WHATSAPP_ACCESS_TOKEN", false),
			secret("verify_token", "Webhook verify token", "WHATSAPP_VERIFY_TOKEN", false),
			secret("app_secret", "App secret (X-Hub-Signature-256)", "WHATSAPP_APP_SECRET", false),
			text("phone_number_id", "Phone number id", false),
			baseURL("api_url", "Graph API base URL", "https://graph.facebook.com/v21.0", false),
			baseURL("gateway_url", "WhatsApp Web gateway URL (QR mode)", "", false),
			list("allowed_users", "Allowed phone numbers", false),
		}},
	{Name: "signal", DisplayName: "Signal", Category: "messaging", Description: "Signal through a signal-cli REST API server",
		Account: []string{"api_url", "phone_number"},
		Fields:  []Field{baseURL("api_url", "signal-cli REST API URL", "", true), text("phone_number", "Phone number", true)}},
	{Name: "matrix", DisplayName: "Matrix", Category: "messaging", Description: "Matrix client-server API sync loop",
		Filters: Filters{Users: "allowed_users", Chats: "allowed_rooms"},
		Fields: []Field{
			secret("access_token", "Access token", "MATRIX_ACCESS_TOKEN", true),
			baseURL("homeserver_url", "Homeserver URL", "", true),
			text("user_id", "User id (@bot:example.org)", false),
			list("allowed_rooms", "Allowed room ids", false),
			list("allowed_users", "Allowed user ids", false),
			boolean("auto_join", "Accept room invites", "true"),
		}},
	{Name: "email", DisplayName: "Email", Category: "messaging", Description: "IMAP IDLE for inbound mail, SMTP for replies",
		Filters: Filters{Users: "allowed_senders"}, Account: []string{"imap_host", "username"},
		Fields: []Field{
			secret("password", "Password", "EMAIL_PASSWORD", true),
			text("username", "Username (and From address)", true),
			text("imap_host", "IMAP host", true),
			text("smtp_host", "SMTP host", true),
			number("imap_port", "IMAP port", "993"),
			number("smtp_port", "SMTP port", "587"),
			text("imap_security", "IMAP security: tls, starttls or none", false),
			text("smtp_security", "SMTP security: tls, starttls or none", false),
			text("from_address", "From address (default: username)", false),
			text("mailbox", "Mailbox to watch", false),
			text("ca_cert_pem", "PEM CA certificate(s) trusted for IMAP and SMTP instead of the system's (a private CA)", false),
			list("allowed_senders", "Allowed sender addresses", false),
		}},
	{Name: "line", DisplayName: "LINE", Category: "messaging", Description: "LINE Messaging API", Webhook: true,
		Fields: []Field{secret("channel_secret", "Channel secret", "LINE_CHANNEL_SECRET", true),
			secret("access_token", "Channel access token", "LINE_CHANNEL_ACCESS_TOKEN", true),
			baseURL("api_url", "API base URL", "https://api.line.me", false)}},
	{Name: "viber", DisplayName: "Viber", Category: "messaging", Description: "Viber REST bot API", Webhook: true,
		Fields: []Field{secret("auth_token", "Auth token", "VIBER_AUTH_TOKEN", true), text("webhook_url", "Public webhook URL", false),
			baseURL("api_url", "API base URL", "https://chatapi.viber.com/pa", false)}},
	{Name: "messenger", DisplayName: "Messenger", Category: "messaging", Description: "Facebook Messenger platform", Webhook: true,
		Fields: []Field{secret("page_token", "Page access token", "MESSENGER_PAGE_TOKEN", true),
			secret("verify_token", "Webhook verify token", "MESSENGER_VERIFY_TOKEN", false),
			secret("app_secret", "App secret (X-Hub-Signature-256)", "MESSENGER_APP_SECRET", false),
			baseURL("api_url", "Graph API base URL", "https://graph.facebook.com/v21.0", false)}},
	{Name: "threema", DisplayName: "Threema", Category: "messaging", Description: "Threema Gateway", Webhook: true,
		Fields: []Field{secret("secret", "API secret", "THREEMA_SECRET", true), text("threema_id", "Threema gateway id", true),
			baseURL("api_url", "Gateway API base URL", "https://msgapi.threema.ch", false)}},
	{Name: "keybase", DisplayName: "Keybase", Category: "messaging", Description: "Keybase chat bot",
		Fields: []Field{secret("paperkey", "Paper key", "KEYBASE_PAPERKEY", true), text("username", "Username", true),
			list("allowed_teams", "Allowed teams", false), baseURL("api_url", "API base URL", "https://keybase.io", false)}},
	{Name: "reddit", DisplayName: "Reddit", Category: "social", Description: "Reddit bot account",
		Fields: []Field{secret("client_secret", "Client secret", "REDDIT_CLIENT_SECRET", true), secret("password", "Password", "REDDIT_PASSWORD", true),
			text("client_id", "Client id", true), text("username", "Username", true), list("subreddits", "Subreddits", false),
			baseURL("api_url", "OAuth API base URL", "https://oauth.reddit.com", false)}},
	{Name: "mastodon", DisplayName: "Mastodon", Category: "social", Description: "Mastodon account (mentions and direct messages)",
		Fields: []Field{secret("access_token", "Access token", "MASTODON_ACCESS_TOKEN", true), baseURL("instance_url", "Instance URL", "", true)}},
	{Name: "bluesky", DisplayName: "Bluesky", Category: "social", Description: "Bluesky (AT Protocol) account",
		Fields: []Field{secret("app_password", "App password", "BLUESKY_APP_PASSWORD", true), text("identifier", "Handle or DID", true),
			baseURL("service_url", "PDS service URL", "https://bsky.social", false)}},
	{Name: "linkedin", DisplayName: "LinkedIn", Category: "social", Description: "LinkedIn organization messaging",
		Fields: []Field{secret("access_token", "Access token", "LINKEDIN_ACCESS_TOKEN", true), text("organization_id", "Organization id", true),
			baseURL("api_url", "API base URL", "https://api.linkedin.com", false)}},
	{Name: "nostr", DisplayName: "Nostr", Category: "social", Description: "Nostr direct messages over relays",
		Fields: []Field{secret("private_key", "Private key", "NOSTR_PRIVATE_KEY", true), list("relays", "Relay URLs (the API base URLs)", false)}},
	{Name: "teams", DisplayName: "Microsoft Teams", Category: "enterprise", Description: "Bot Framework activities webhook in, connector REST out",
		Webhook: true, Filters: Filters{Users: "allowed_users", Chats: "allowed_conversations", Spaces: "allowed_tenants"}, Account: []string{"app_id"},
		Fields: []Field{secret("app_password", "App password (client secret)", "TEAMS_APP_PASSWORD", true), text("app_id", "App id", true),
			baseURL("auth_url", "Token endpoint URL", "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token", false),
			baseURL("openid_url", "Bot Framework OpenID metadata URL", "https://login.botframework.com/v1/.well-known/openidconfiguration", false),
			list("allowed_users", "Allowed user ids", false), list("allowed_conversations", "Allowed conversation ids", false),
			list("allowed_tenants", "Allowed tenant ids", false)}},
	{Name: "mattermost", DisplayName: "Mattermost", Category: "enterprise", Description: "Mattermost REST v4 and websocket events",
		Filters: Filters{Users: "allowed_users", Chats: "allowed_channels"}, Account: []string{"server_url", "token"},
		Fields: []Field{secret("token", "Bot access token", "MATTERMOST_TOKEN", true), baseURL("server_url", "Server URL", "", true),
			list("allowed_channels", "Allowed channel ids", false), list("allowed_users", "Allowed user ids or names", false)}},
	{Name: "google_chat", DisplayName: "Google Chat", Category: "enterprise", Description: "Google Chat app webhook in, REST or incoming webhook out",
		Webhook: true, Filters: Filters{Users: "allowed_users", Chats: "space_ids"},
		Fields: []Field{secret("service_account", "Service account JSON", "GOOGLE_CHAT_SERVICE_ACCOUNT", true),
			secret("verification_token", "Webhook verification token", "GOOGLE_CHAT_VERIFICATION_TOKEN", false),
			list("space_ids", "Allowed space ids", false), list("allowed_users", "Allowed user ids", false),
			// The URL carries the webhook's key and token: a credential.
			secret("incoming_webhook_url", "Incoming webhook URL of one space (replies to that space go through it)", "GOOGLE_CHAT_WEBHOOK_URL", false),
			baseURL("api_url", "Chat API base URL", "https://chat.googleapis.com/v1", false),
			baseURL("token_url", "OAuth token URL", "https://oauth2.googleapis.com/token", false),
			text("audience", "Authentication audience: the Cloud project number (or the app's endpoint URL)", false),
			baseURL("certs_url", "Public keys of Chat's bearer tokens (default: Google's, by audience type)", "", false)}},
	{Name: "webex", DisplayName: "Webex", Category: "enterprise", Description: "Webex bot",
		Fields: []Field{secret("bot_token", "Bot token", "WEBEX_BOT_TOKEN", true), list("allowed_rooms", "Allowed rooms", false),
			baseURL("api_url", "API base URL", "https://webexapis.com/v1", false)}},
	{Name: "feishu", DisplayName: "Feishu / Lark", Category: "enterprise", Description: "Feishu open platform bot", Webhook: true,
		Fields: []Field{secret("app_secret", "App secret", "FEISHU_APP_SECRET", true), text("app_id", "App id", true),
			baseURL("api_url", "Open API base URL", "https://open.feishu.cn/open-apis", false)}},
	{Name: "dingtalk", DisplayName: "DingTalk", Category: "enterprise", Description: "DingTalk robot (webhook or stream mode)", Webhook: true,
		Fields: []Field{secret("app_key", "App key", "DINGTALK_APP_KEY", false), secret("app_secret", "App secret", "DINGTALK_APP_SECRET", false),
			secret("access_token", "Robot access token", "DINGTALK_ACCESS_TOKEN", false), secret("secret", "Signing secret", "DINGTALK_SECRET", false),
			text("receive_mode", "Receive mode: webhook or stream", false), baseURL("api_url", "API base URL", "https://api.dingtalk.com", false)}},
	{Name: "pumble", DisplayName: "Pumble", Category: "enterprise", Description: "Pumble bot", Webhook: true,
		Fields: []Field{secret("bot_token", "Bot token", "PUMBLE_BOT_TOKEN", true), baseURL("api_url", "API base URL", "https://pumble-api-keys.addons.marketplace.cake.com", false)}},
	{Name: "flock", DisplayName: "Flock", Category: "enterprise", Description: "Flock bot", Webhook: true,
		Fields: []Field{secret("bot_token", "Bot token", "FLOCK_BOT_TOKEN", true), baseURL("api_url", "API base URL", "https://api.flock.com/v1", false)}},
	{Name: "twist", DisplayName: "Twist", Category: "enterprise", Description: "Twist integration",
		Fields: []Field{secret("token", "Token", "TWIST_TOKEN", true), text("workspace_id", "Workspace id", true), list("allowed_channels", "Allowed channels", false),
			baseURL("api_url", "API base URL", "https://api.twist.com/api/v3", false)}},
	{Name: "zulip", DisplayName: "Zulip", Category: "enterprise", Description: "Zulip bot",
		Fields: []Field{secret("api_key", "API key", "ZULIP_API_KEY", true), baseURL("server_url", "Server URL", "", true), text("bot_email", "Bot email", true),
			list("streams", "Streams", false)}},
	{Name: "irc", DisplayName: "IRC", Category: "developer", Description: "IRC client with TLS, SASL, reconnect and rejoin",
		Filters: Filters{Users: "allowed_users", Chats: "allowed_channels"}, Account: []string{"server", "port", "nick"},
		Fields: []Field{
			text("server", "Server host (the API base address)", true),
			text("nick", "Nickname", true),
			list("channels", "Channels to join", false),
			number("port", "Port", "6697"),
			boolean("use_tls", "Use TLS", "true"),
			boolean("tls_insecure_skip_verify", "Skip TLS certificate verification", "false"),
			secret("password", "SASL PLAIN password (SASL is then required)", "IRC_PASSWORD", false),
			text("sasl_user", "SASL account (default: nick)", false),
			secret("server_password", "Server password (PASS)", "IRC_SERVER_PASSWORD", false),
			text("username", "Username (ident)", false),
			text("realname", "Real name", false),
			list("allowed_users", "Allowed nicks", false),
			list("allowed_channels", "Channels whose messages are answered", false),
			boolean("require_mention", "In channels, answer only messages addressed to the nick", "true"),
		}},
	{Name: "xmpp", DisplayName: "XMPP", Category: "developer", Description: "XMPP client: one-to-one chat and MUC rooms",
		Filters: Filters{Users: "allowed_users", Chats: "allowed_rooms"}, Account: []string{"jid"},
		Fields: []Field{
			secret("password", "Password", "XMPP_PASSWORD", true),
			text("jid", "JID (bot@example.org)", true),
			text("server", "Server host (default: the JID's domain)", false),
			number("port", "Port", "5222"),
			list("rooms", "MUC rooms to join", false),
			text("room_nick", "Nickname in rooms (default: JID local part)", false),
			boolean("use_tls", "Direct TLS instead of STARTTLS", "false"),
			boolean("starttls", "Require STARTTLS", "true"),
			boolean("tls_insecure_skip_verify", "Skip TLS certificate verification", "false"),
			list("allowed_users", "Allowed bare JIDs", false),
			list("allowed_rooms", "Rooms whose messages are answered", false),
			boolean("require_mention", "In rooms, answer only messages addressed to the bot", "true"),
		}},
	{Name: "gitter", DisplayName: "Gitter", Category: "developer", Description: "Gitter room bot",
		Fields: []Field{secret("token", "Token", "GITTER_TOKEN", true), text("room_id", "Room id", true), baseURL("api_url", "API base URL", "https://api.gitter.im/v1", false)}},
	{Name: "discourse", DisplayName: "Discourse", Category: "developer", Description: "Discourse forum bot",
		Fields: []Field{secret("api_key", "API key", "DISCOURSE_API_KEY", true), baseURL("base_url", "Forum base URL", "", true),
			text("api_username", "API username", false), list("categories", "Categories", false)}},
	{Name: "revolt", DisplayName: "Revolt", Category: "developer", Description: "Revolt bot",
		Fields: []Field{secret("bot_token", "Bot token", "REVOLT_BOT_TOKEN", true), baseURL("api_url", "API base URL", "https://api.revolt.chat", false)}},
	{Name: "guilded", DisplayName: "Guilded", Category: "developer", Description: "Guilded bot",
		Fields: []Field{secret("bot_token", "Bot token", "GUILDED_BOT_TOKEN", true), list("server_ids", "Server ids", false),
			baseURL("api_url", "API base URL", "https://www.guilded.gg/api/v1", false)}},
	{Name: "nextcloud", DisplayName: "Nextcloud Talk", Category: "developer", Description: "Nextcloud Talk bot",
		Fields: []Field{secret("token", "Token", "NEXTCLOUD_TOKEN", true), baseURL("server_url", "Server URL", "", true), list("allowed_rooms", "Allowed rooms", false)}},
	{Name: "rocketchat", DisplayName: "Rocket.Chat", Category: "developer", Description: "Rocket.Chat bot",
		Fields: []Field{secret("token", "Token", "ROCKETCHAT_TOKEN", true), baseURL("server_url", "Server URL", "", true), text("user_id", "User id", true),
			list("allowed_channels", "Allowed channels", false)}},
	{Name: "twitch", DisplayName: "Twitch", Category: "developer", Description: "Twitch chat bot",
		Fields: []Field{secret("oauth_token", "OAuth token", "TWITCH_OAUTH_TOKEN", true), text("nick", "Nick", true), list("channels", "Channels", true),
			baseURL("server", "Chat server", "irc.chat.twitch.tv", false)}},
	{Name: "ntfy", DisplayName: "ntfy", Category: "notifications", Description: "ntfy topic: publish, and subscribe to the topic's stream",
		Account: []string{"server_url", "topic"},
		Fields: []Field{secret("token", "Access token", "NTFY_TOKEN", false), text("topic", "Topic", true),
			baseURL("server_url", "Server URL", "https://ntfy.sh", false)}},
	{Name: "gotify", DisplayName: "Gotify", Category: "notifications", Description: "Gotify: REST publish and websocket stream",
		Account: []string{"server_url", "client_token"},
		Fields: []Field{secret("app_token", "Application token (publish)", "GOTIFY_APP_TOKEN", true),
			secret("client_token", "Client token (stream)", "GOTIFY_CLIENT_TOKEN", true), baseURL("server_url", "Server URL", "", true)}},
	{Name: "webhook", DisplayName: "Webhook", Category: "notifications", Description: "Generic webhook: HMAC-signed inbound, callback URL outbound",
		Webhook: true,
		Filters: Filters{Users: "allowed_senders"},
		Fields: []Field{secret("secret", "HMAC secret (signs both directions)", "WEBHOOK_SECRET", true), baseURL("callback_url", "Callback URL for replies", "", false),
			list("allowed_senders", "Allowed sender ids", false)}},
	{Name: "voice", DisplayName: "Voice", Category: "media", Description: "Voice over a websocket with speech-to-text and text-to-speech",
		Fields: []Field{secret("api_key", "API key", "OPENAI_API_KEY", true), baseURL("stt_url", "Speech-to-text URL", "", false),
			baseURL("tts_url", "Text-to-speech URL", "", false), text("tts_voice", "Voice", false), number("buffer_threshold", "Buffer threshold", "")}},
	{Name: "mumble", DisplayName: "Mumble", Category: "notifications", Description: "Mumble text chat",
		Fields: []Field{secret("password", "Password", "MUMBLE_PASSWORD", false), text("host", "Host (the server address)", true), text("username", "Username", true),
			number("port", "Port", "64738"), text("channel", "Channel", false)}},
	{Name: "wechat", DisplayName: "WeChat", Category: "messaging", SetupType: "qr", Description: "WeChat bot",
		Fields: []Field{secret("bot_token", "Bot token", "WECHAT_BOT_TOKEN", false), list("allowed_users", "Allowed users", false),
			baseURL("api_url", "API base URL", "", false)}},
	{Name: "wecom", DisplayName: "WeCom", Category: "messaging", Description: "WeCom (WeChat Work) bot", Webhook: true,
		Fields: []Field{secret("secret", "Bot secret", "WECOM_BOT_SECRET", true), secret("token", "Callback token", "WECOM_CALLBACK_TOKEN", true),
			secret("encoding_aes_key", "Encoding AES key", "WECOM_ENCODING_AES_KEY", true), text("bot_id", "Bot id", true),
			text("mode", "Mode: websocket or callback", false), baseURL("api_url", "API base URL", "https://qyapi.weixin.qq.com/cgi-bin", false)}},
	{Name: "qq", DisplayName: "QQ", Category: "messaging", Description: "QQ bot",
		Fields: []Field{secret("app_secret", "App secret", "QQ_BOT_APP_SECRET", true), text("app_id", "App id", true), list("allowed_users", "Allowed users", false),
			baseURL("api_url", "API base URL", "https://api.sgroup.qq.com", false)}},
}

var specIndex = func() map[string]*Spec {
	m := make(map[string]*Spec, len(registry))
	for i := range registry {
		s := &registry[i]
		if s.SetupType == "" {
			s.SetupType = "form"
		}
		s.Fields = append(s.Fields, commonFields()...)
		m[s.Name] = s
	}
	return m
}()

// Specs returns every registry entry, in LibreFang's order.
func Specs() []*Spec {
	out := make([]*Spec, len(registry))
	for i := range registry {
		out[i] = &registry[i]
	}
	return out
}

// Lookup returns the registry entry for an adapter name.
func Lookup(adapter string) (*Spec, bool) {
	s, ok := specIndex[adapter]
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
