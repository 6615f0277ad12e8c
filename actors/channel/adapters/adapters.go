// Package adapters links the chat platform adapters built into fangd: one
// import per adapter, each implemented in its own package under
// actors/channel/<platform>/, whose init registers its configuration
// schema and builder with channel.Register (the way litestream's replica
// clients register themselves). A LibreFang catalog adapter with no
// package linked here is listed with supported: false and configuring it
// is a 501.
package adapters

import (
	"github.com/fangd/fangd/actors/channel"

	_ "github.com/fangd/fangd/actors/channel/discord"
	_ "github.com/fangd/fangd/actors/channel/email"
	_ "github.com/fangd/fangd/actors/channel/googlechat"
	_ "github.com/fangd/fangd/actors/channel/gotify"
	_ "github.com/fangd/fangd/actors/channel/irc"
	_ "github.com/fangd/fangd/actors/channel/matrix"
	_ "github.com/fangd/fangd/actors/channel/mattermost"
	_ "github.com/fangd/fangd/actors/channel/ntfy"
	_ "github.com/fangd/fangd/actors/channel/slack"
	_ "github.com/fangd/fangd/actors/channel/teams"
	_ "github.com/fangd/fangd/actors/channel/telegram"
	_ "github.com/fangd/fangd/actors/channel/webhook"
	_ "github.com/fangd/fangd/actors/channel/whatsapp"
	_ "github.com/fangd/fangd/actors/channel/xmpp"
)

// Builders returns the built-in adapters by registry name.
func Builders() channel.Builders { return channel.Registered() }
