package stdio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// plainResponse must give exactly what the SDK's decoder gives, and take
// the answers to fangd's calls (a check that quietly declined everything
// would leave the SDK's double decode in place and pass otherwise).
func TestPlainResponseDecodesAsTheSDK(t *testing.T) {
	deep := `{"jsonrpc":"2.0","id":1,"result":` + strings.Repeat("[", 1001) + strings.Repeat("]", 1001) + `}`
	for _, c := range []struct {
		frame string
		taken bool
	}{
		{`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"Echo: go"}]}}`, true},
		{`{"result":{"content":[]},"id":12,"jsonrpc":"2.0"}`, true},
		{`{ "jsonrpc" : "2.0" , "id" : 3 , "result" : { "a" : [ 1 , 2 ] } }`, true},
		{`{"jsonrpc":"2.0","id":0,"result":{}}`, true},
		{`{"jsonrpc":"2.0","id":-4,"result":null}`, true},
		{`{"jsonrpc":"2.0","id":999999999999999,"result":"x\u00e9\"\\"}`, true},
		{`{"jsonrpc":"2.0","id":1,"result":{"deep":` + strings.Repeat("[", 998) + strings.Repeat("]", 998) + `}}`, true},
		{`{"jsonrpc":"2.0","id":"s1","result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1.5,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1e2,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1234567890123456,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":null,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}`, false},
		{`{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}`, false},
		{`{"jsonrpc":"2.0","id":1,"result":{},"extra":true}`, false},
		{`{"JSONRPC":"2.0","id":1,"result":{}}`, false},
		{`{"jsonrpc":"2.0","Id":1,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1,"Result":{}}`, false},
		{`{"jsonrpc":"1.0","id":1,"result":{}}`, false},
		{`{"jsonrpc":"2\u002e0","id":1,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1}`, false},
		{`{"jsonrpc":"2.0","id":1,"method":"ping"}`, false},
		{`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}`, false},
		{`[{"jsonrpc":"2.0","id":1,"result":{}}]`, false},
		{deep, false},
	} {
		got := plainResponse([]byte(c.frame))
		if (got != nil) != c.taken {
			t.Errorf("%.60s: taken %v, want %v", c.frame, got != nil, c.taken)
		}
		if got == nil {
			continue
		}
		want, err := jsonrpc.DecodeMessage([]byte(c.frame))
		if err != nil {
			t.Errorf("%.60s: taken, but the SDK refuses it: %v", c.frame, err)
			continue
		}
		if !reflect.DeepEqual(jsonrpc.Message(got), want) {
			t.Errorf("%.60s: got %#v, the SDK %#v", c.frame, got, want)
		}
	}
}

// pipes is a responseConn over in-memory pipes: the test writes the
// server's frames to out and reads what the connection writes from in.
type pipes struct {
	conn    *responseConn
	out     *io.PipeWriter
	written *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Close() error { return nil }

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newPipes(t *testing.T) *pipes {
	t.Helper()
	r, w := io.Pipe()
	written := &lockedBuffer{}
	c, err := newResponseConn(context.Background(), r, written)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &pipes{conn: c.(*responseConn), out: w, written: written}
}

func (p *pipes) read(t *testing.T) (jsonrpc.Message, error) {
	t.Helper()
	return readWithin(p.conn)
}

// Every kind of message reads as the SDK's own connection reads the same
// frames, the plain responses and everything handed to the SDK alike,
// errors included; writes are the SDK's. (Each frame is read in full
// before the next is sent: a plain response may overtake a message handed
// to the SDK just before it, which the JSON-RPC layer, matching responses
// by id, does not mind.)
func TestResponseConnReadsWhatTheSDKReads(t *testing.T) {
	p := newPipes(t)
	rr, rw := io.Pipe()
	ref, err := (&sdk.IOTransport{Reader: rr, Writer: &lockedBuffer{}}).Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Close() })
	for _, c := range []struct {
		frame string
		msgs  int
	}{
		{`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Echo: go"}]}}`, 1},
		{`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`, 1},
		{`{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"Unknown tool"}}`, 1},
		{`{"jsonrpc":"2.0","id":"srv-1","method":"ping"}`, 1},
		{`{"jsonrpc":"2.0","id":3,"result":{}}`, 1},
		{`{"jsonrpc":"2.0","id":"s","result":{}}`, 1},
		{`{"jsonrpc":"2.0","id":1.5,"result":{}}`, 1},
		{`{"jsonrpc":"1.0","id":5,"result":{}}`, 1},
		// The SDK refuses this batch and then reads its second message.
		{`[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"b"}]`, 2},
		{`[{"jsonrpc":"2.0","id":"b1","method":"ping"},{"jsonrpc":"2.0","id":"b2","method":"ping"}]`, 2},
		{`{"jsonrpc":"2.0","id":6,"result":{}}`, 1},
		{`{"jsonrpc":"2.0","id":4,"result":{}} x`, 1},
	} {
		go p.out.Write([]byte(c.frame + "\n"))
		go rw.Write([]byte(c.frame + "\n"))
		for i := 0; i < c.msgs; i++ {
			got, gotErr := p.read(t)
			want, wantErr := readWithin(ref)
			if !reflect.DeepEqual(got, want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Fatalf("%s: read %#v, %v; the SDK reads %#v, %v", c.frame, got, gotErr, want, wantErr)
			}
		}
	}
	id, _ := jsonrpc.MakeID(float64(9))
	if err := p.conn.Write(context.Background(), &jsonrpc.Request{ID: id, Method: "tools/call", Params: []byte(`{"name":"echo"}`)}); err != nil {
		t.Fatal(err)
	}
	if got := p.written.String(); got != `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo"}}`+"\n" {
		t.Fatalf("written %q", got)
	}
}

func readWithin(c sdk.Connection) (jsonrpc.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Read(ctx)
}

// The end of the server's output is the end of the stream, after the
// frames before it.
func TestResponseConnEndsWithTheServersOutput(t *testing.T) {
	p := newPipes(t)
	go func() {
		p.out.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n" + `{"jsonrpc":"2.0","method":"n"}` + "\n"))
		p.out.Close()
	}()
	for i := 0; i < 2; i++ {
		if _, err := p.read(t); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if _, err := p.read(t); !errors.Is(err, io.EOF) {
		t.Fatalf("after the output ended: %v, want EOF", err)
	}
}

// Close ends a pending Read and closes the server's stdout.
func TestResponseConnClose(t *testing.T) {
	p := newPipes(t)
	done := make(chan error, 1)
	go func() {
		_, err := p.conn.Read(context.Background())
		done <- err
	}()
	p.conn.Close()
	select {
	case err := <-done:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("read after close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	if _, err := p.out.Write([]byte("{}")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("stdout still open after Close: %v", err)
	}
}
