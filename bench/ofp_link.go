package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/peer"
	"github.com/fangd/fangd/transport/ofp"
)

// instantLocal is a node's local side whose one agent answers at once and
// writes nothing: what is left of a request is the link (framing, HMAC,
// TLS, the peer actors, the request-id matching).
type instantLocal struct{}

func (instantLocal) Agents(context.Context) ([]ofp.RemoteAgent, error) {
	return []ofp.RemoteAgent{{ID: "agent-bench", Name: "bench", Description: "bench", State: "Running"}}, nil
}

func (instantLocal) Turn(_ context.Context, _, message, _ string) (string, uint64, error) {
	return message, 0, nil
}

// linkNode is one in-process peer network on a real store, vault and
// audit log.
type linkNode struct {
	*inProc
	net *peer.Network
}

func startLinkNode(env *Env, name string, boot []string, encrypt bool) (*linkNode, error) {
	p, err := startInProc(env, "ofp-link-")
	if err != nil {
		return nil, err
	}
	n := &linkNode{inProc: p}
	env.onClose(n.close)
	vault, err := n.vault()
	if err != nil {
		return nil, err
	}
	log, err := n.audit(audit.Options{})
	if err != nil {
		return nil, err
	}
	id, err := peer.LoadIdentity(vault, name)
	if err != nil {
		return nil, err
	}
	pins, err := peer.OpenPins(n.db)
	if err != nil {
		return nil, err
	}
	n.net, err = peer.Start(n.k, peer.Options{Identity: id, SharedSecret: "bench-ofp-link-secret", Listen: "127.0.0.1:0", Bootstrap: boot,
		MaxPeers: 10, MaxConcurrent: 10000, Keepalive: ofpKeepalive, ReconnectInitial: 500 * time.Millisecond, ReconnectMax: 5 * time.Second,
		TurnTimeout: 30 * time.Second, EncryptLinks: encrypt, Pins: pins, Local: instantLocal{}, Audit: log, Log: zerolog.Nop()})
	return n, err
}

// ofpLinkRate measures, in this process, OFP requests per second over the
// one link node-b keeps to node-a: clients goroutines on node-b sending
// agent_message (node-a's agent answers at once, nothing durable) or
// discover back to back through peer.Network, the API cmd/fangd's
// comms/send uses, for dur each.
func ofpLinkRate(ctx context.Context, env *Env, mode string, encrypt bool, clients int, dur time.Duration) ([]Row, error) {
	a, err := startLinkNode(env, "node-a", nil, encrypt)
	if err != nil {
		return nil, err
	}
	b, err := startLinkNode(env, "node-b", []string{a.net.ListenAddr()}, encrypt)
	if err != nil {
		return nil, err
	}
	var info peer.PeerInfo
	if err := waitFor(ctx, 30*time.Second, "the in-process link", func() bool {
		info, err = b.net.Peer(ctx, "node-a")
		return err == nil && info.State == peer.StateConnected
	}); err != nil {
		return nil, err
	}
	// One request at a time first: the link's round trip.
	lat := make([]time.Duration, 0, ofpSends)
	for range ofpSends {
		begin := time.Now()
		if _, err := b.net.SendAgent(ctx, "node-a", "bench", "bench", "bench"); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(begin))
	}
	slices.Sort(lat)
	rows := []Row{infoRow(fmt.Sprintf("ofp %s: agent_message round trip over one link, in-process nodes, instant agent, p50 / p99 (%d sequential)", mode, len(lat)),
		us(pct(lat, 50))+" / "+us(pct(lat, 99)))}
	for _, kind := range []string{"agent_message", "discover"} {
		call := func(i int) error {
			if kind == "discover" {
				_, err := b.net.Discover(ctx, "node-a", "bench")
				return err
			}
			_, err := b.net.SendAgent(ctx, "node-a", "bench", "bench", fmt.Sprint("bench-", i))
			return err
		}
		var done atomic.Int64
		var fail atomic.Value
		stop := time.Now().Add(dur)
		var wg sync.WaitGroup
		begin := time.Now()
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) && ctx.Err() == nil {
					if err := call(i); err != nil {
						fail.CompareAndSwap(nil, err)
						return
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		if err, _ := fail.Load().(error); err != nil {
			return rows, fmt.Errorf("%s over the in-process link: %w", kind, err)
		}
		rate := float64(done.Load()) / time.Since(begin).Seconds()
		after, err := b.net.Peer(ctx, "node-a")
		if err != nil {
			return rows, err
		}
		rows = append(rows, Row{Metric: fmt.Sprintf("ofp %s: OFP %s requests/s over one link, in-process nodes (%d clients, instant agent; %s link(s))", mode, kind, clients, fmt.Sprint(after.Links)),
			Value: thousands(rate), Target: ">= 5,000", Verdict: verdict(rate >= 5000)})
	}
	return rows, nil
}
