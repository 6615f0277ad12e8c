package matrix_test

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/matrix"
	"github.com/fangd/fangd/actors/channel/matrix/matrixtest"
)

// platform: the bot is invited to the lobby, where Alice talks; fangd
// reads /sync.
type platform struct{ *matrixtest.Server }

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	p.Invite(room)
	h.Configure("matrix", map[string]any{"token": channeltest.Credential(bad, "syt_good", "syt_bad"), "homeserver_url": p.URL,
		"agent_name": channeltest.AgentName})
}

func (p platform) Ready(ctx context.Context) error { return p.WaitJoined(ctx, room) }

func (p platform) Inject(_ context.Context, text string) error {
	p.Say(room, "@alice:fake.test", text)
	return nil
}

func (p platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitSent(ctx, func(s matrixtest.Sent) bool { return s.RoomID == room && s.Body == text })
	return err
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "matrix", Builder: matrix.New, LinkRoute: "whoami",
		New: func(t *testing.T) channeltest.Platform {
			return platform{channeltest.Cleanup(t, matrixtest.New("syt_good"))}
		},
		BadTokenError: "M_UNKNOWN_TOKEN",
		Skip:          map[channeltest.Case]string{channeltest.CaseBadSignature: "the Matrix adapter reads /sync as a client; it takes no application-service pushes"},
	})
}
