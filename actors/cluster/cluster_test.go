//go:build cluster

// Behind the "cluster" build tag and run without -race by `make
// test-cluster`: upstream's cluster package is racy (see
// cmd/fangd/clustertest/doc.go).
package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fangd/fangd/actors/cluster/devetcd"
	"github.com/fangd/fangd/actors/kernel"
)

// A message batch naming a type or serializer the receiver does not have
// makes upstream's endpoint reader index out of range; without the
// recovering interceptor that panic kills the whole node. With it the
// stream is refused and the node serves on.
func TestUnknownMessageDoesNotCrashTheNode(t *testing.T) {
	etcd, err := devetcd.Start(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	k := kernel.New(zerolog.Nop())
	n, err := Start(k, Options{Endpoints: []string{etcd.Endpoint}, Name: "t", NodeName: "a", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()

	conn, err := grpc.NewClient(n.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, env := range []*remote.MessageEnvelope{
		{Target: 0, TypeId: 7, SerializerId: 0},                         // no such type name
		{Target: 0, TypeId: 0, SerializerId: 9, MessageData: []byte{1}}, // no such serializer
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stream, err := remote.NewRemotingClient(conn).Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = stream.Send(&remote.RemoteMessage{MessageType: &remote.RemoteMessage_MessageBatch{MessageBatch: &remote.MessageBatch{
			TypeNames: []string{"fangd.Unknown"},
			Targets:   []*actor.PID{{Address: n.Address(), Id: "nobody"}},
			Envelopes: []*remote.MessageEnvelope{env},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err == nil {
			t.Fatal("the bad batch was not refused")
		}
		cancel()
	}
	// Still a member, still answering.
	ms, err := n.Members(context.Background())
	if err != nil || len(ms) != 1 || !ms[0].Self {
		t.Fatalf("%+v %v", ms, err)
	}
}

// etcd going away between the join and the node record (make cluster
// interrupted while its nodes started: etcd stopped first) made Start
// call upstream's unbounded Shutdown, which deregisters with no deadline:
// the node neither served nor exited, for good, whatever signal it got.
// Start now leaves bounded and returns the error.
func TestStartReturnsWhenEtcdDiesBeforeTheRecord(t *testing.T) {
	etcd, err := devetcd.Start(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testHookJoined = func() { etcd.Close() }
	defer func() { testHookJoined = nil }()
	k := kernel.New(zerolog.Nop())
	done := make(chan error, 1)
	go func() {
		n, err := Start(k, Options{Endpoints: []string{etcd.Endpoint}, Name: "t", NodeName: "a", Log: zerolog.Nop()})
		if n != nil {
			n.Stop()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Start succeeded with etcd gone before the node record")
		}
		t.Logf("Start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("Start hung with etcd gone before the node record")
	}
}

// A member's kinds in GET /api/cluster are the fangd kinds it hosts (its
// record's hosted counts above zero), not Proto.Actor's own member kinds
// ("prototopic"), which read as a fangd kind next to the kinds table.
func TestMemberKindsAreTheKindsItHosts(t *testing.T) {
	etcd, err := devetcd.Start(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	k := kernel.New(zerolog.Nop())
	n, err := Start(k, Options{Endpoints: []string{etcd.Endpoint}, Name: "t", NodeName: "a", Log: zerolog.Nop(),
		Hosted: func(context.Context) map[string]int {
			return map[string]int{KindAgent: 2, KindChannel: 0, KindWebhook: 1}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	ms, err := n.Members(context.Background())
	if err != nil || len(ms) != 1 || ms[0].State != "up" {
		t.Fatalf("%+v %v", ms, err)
	}
	if got := ms[0].Kinds; len(got) != 2 || got[0] != KindAgent || got[1] != KindWebhook {
		t.Fatalf("member kinds %q, want [%s %s] (hosted %v)", got, KindAgent, KindWebhook, ms[0].Hosted)
	}
}
