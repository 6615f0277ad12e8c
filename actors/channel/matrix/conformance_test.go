package matrix_test

import (
	"context"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/matrix"
	"github.com/fangd/fangd/actors/channel/matrix/matrixtest"
)

// platform drives matrixtest for the conformance suite: the bot is
// invited to the lobby, where Alice talks; fangd reads /sync.
type platform struct{ *matrixtest.Server }

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	tok := "syt_good"
	if bad {
		tok = "syt_bad"
	}
	p.Invite(room)
	h.Configure("matrix", map[string]any{"token": tok, "homeserver_url": p.URL, "agent_name": channeltest.AgentName})
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

func (p platform) LinkRequests() int { return p.Calls("whoami") }

func (p platform) RateLimitNext(n int) time.Duration {
	p.FakeState.RateLimitNext(n, 2)
	return 2 * time.Second
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name:     "matrix",
		Builders: channel.Builders{"matrix": matrix.New},
		New: func(t *testing.T) channeltest.Platform {
			fake := matrixtest.New("syt_good")
			t.Cleanup(fake.Close)
			return platform{fake}
		},
		BadTokenError: "M_UNKNOWN_TOKEN",
		Skip: map[channeltest.Case]string{
			channeltest.CaseBadSignature: "the Matrix adapter reads /sync as a client; it takes no application-service pushes",
		},
	})
}
