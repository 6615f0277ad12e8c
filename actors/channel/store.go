package channel

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fangd/fangd/store"
)

// record is a channel's configuration as stored (collection "channels").
// Secret values are in the vault under secretName(name, key); only the
// keys that have one are listed here.
type record struct {
	Name      string              `json:"name"`
	Adapter   string              `json:"adapter"`
	Source    string              `json:"source"` // "api" or "config" (config.toml)
	AgentID   string              `json:"agent_id,omitempty"`
	Values    map[string]string   `json:"values"`
	Lists     map[string][]string `json:"lists"`
	Secrets   []string            `json:"secrets"`
	UpdatedAt string              `json:"updated_at"`
	// Epoch is fixed when the channel is created, so message keys
	// ("<name>-<epoch>-<seq>") of a deleted and re-created channel never
	// repeat an old one's.
	Epoch string `json:"epoch"`
}

// Sources of a record.
const (
	SourceAPI    = "api"
	SourceConfig = "config"
)

func secretName(channel, key string) string { return "channel/" + channel + "/" + key }

// inItem is an accepted inbound message whose agent turn has not finished
// (collection "channel-inbox", id "<channel>/<seq>"): after a crash the
// turn runs again, so an acknowledged message is answered.
type inItem struct {
	Seq      uint64  `json:"seq"`
	Msg      Inbound `json:"msg"`
	Attempts int     `json:"attempts"`
	// pending is true while the item's inbox write has not synced: its
	// reply waits for it, so that nothing is answered that the platform
	// could deliver again after a restart.
	pending bool
}

// outItem is one message waiting to be sent (collection "channel-outbox",
// id "<channel>/<seq>"), already split to the platform's length limit.
type outItem struct {
	Seq      uint64   `json:"seq"`
	Msg      Outbound `json:"msg"`
	Source   string   `json:"source"` // "reply", "comms", "test"
	Created  string   `json:"created"`
	attempts int
	retryAt  time.Time
	answers  *inItem // the message this replies to, while its write syncs
}

// held reports whether the item waits for the message it answers to be
// stored.
func (o *outItem) held() bool { return o.answers != nil && o.answers.pending }

// notBefore is when a failed message may be tried again.
func (o *outItem) notBefore() time.Time { return o.retryAt }

// seqID is the store id of seq: fixed width, so ids sort in seq order.
func seqID(channel string, seq uint64) string { return fmt.Sprintf("%s/%020d", channel, seq) }

// queues are a channel's durable inbox and outbox.
type queues struct {
	db      *store.DB
	inbox   *store.Collection[inItem]
	outbox  *store.Collection[outItem]
	cursors *store.Collection[string]
}

func newQueues(db *store.DB) *queues {
	return &queues{db: db,
		inbox:   store.NewCollection[inItem](db, "channel-inbox"),
		outbox:  store.NewCollection[outItem](db, "channel-outbox"),
		cursors: store.NewCollection[string](db, "channel-cursor")}
}

// load returns a channel's pending inbox and outbox items in order.
func (q *queues) load(channel string) ([]*inItem, []*outItem, error) {
	in, err := listAll(q.inbox, channel+"/")
	if err != nil {
		return nil, nil, err
	}
	out, err := listAll(q.outbox, channel+"/")
	if err != nil {
		return nil, nil, err
	}
	return in, out, nil
}

// listAll is every item of c under prefix, in order, read page by page.
func listAll[T any](c *store.Collection[T], prefix string) ([]*T, error) {
	var all []*T
	for after := ""; ; {
		page, err := c.List(prefix, after, 500)
		if err != nil {
			return nil, err
		}
		for i := range page.Items {
			all = append(all, &page.Items[i])
		}
		if after = page.Next; after == "" {
			return all, nil
		}
	}
}

// putInbox stores accepted inbound messages in one transaction, ordered
// before every write handed to the store after it returns; done is called
// once the transaction is synced (or failed).
func (q *queues) putInbox(channel string, items []*inItem, cur *Cursor, done func(error)) {
	q.db.UpdateAsync(func(tx *store.Txn) error {
		for _, it := range items {
			if err := q.inbox.PutTx(tx, seqID(channel, it.Seq), *it); err != nil {
				return err
			}
		}
		if cur != nil {
			return q.cursors.PutTx(tx, cursorKey(channel, cur.Key), cur.Value)
		}
		return nil
	}, done)
}

// finishTurn moves a turn's reply into the outbox and drops its inbox item,
// atomically: a crash leaves either the turn to redo or the reply to send.
// It is ordered before every write handed to the store after it returns;
// done is called once it is synced (or failed).
func (q *queues) finishTurn(channel string, in *inItem, out []*outItem, done func(error)) {
	q.db.UpdateAsync(func(tx *store.Txn) error {
		for _, it := range out {
			if err := q.outbox.PutTx(tx, seqID(channel, it.Seq), *it); err != nil {
				return err
			}
		}
		if in != nil {
			return q.inbox.DeleteTx(tx, seqID(channel, in.Seq))
		}
		return nil
	}, done)
}

// sent drops a sent message from the outbox without waiting for the
// sync: a crash before it sends the message again, which is all a synced
// delete could promise too (the platform took it before the delete).
func (q *queues) sent(channel string, seq uint64, done func(error)) {
	q.outbox.DeleteAsync(seqID(channel, seq), done)
}

// purge deletes everything queued for channel.
func (q *queues) purge(channel string) error {
	in, out, err := q.load(channel)
	if err != nil {
		return err
	}
	return q.db.Update(func(tx *store.Txn) error {
		for _, it := range in {
			if err := q.inbox.DeleteTx(tx, seqID(channel, it.Seq)); err != nil {
				return err
			}
		}
		for _, it := range out {
			if err := q.outbox.DeleteTx(tx, seqID(channel, it.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
}

// maxSeq is the highest seq among items, so new ones continue after it.
func maxSeq(in []*inItem, out []*outItem) uint64 {
	var m uint64
	for _, it := range in {
		m = max(m, it.Seq)
	}
	for _, it := range out {
		m = max(m, it.Seq)
	}
	return m
}

// cursorKey is where an adapter's cursor lives (collection "channel-cursor").
func cursorKey(channel, key string) string {
	return channel + "/" + strings.ReplaceAll(key, "/", "_")
}

func parseSeq(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }

// seqBlock is how many sequence numbers are reserved per durable write.
const seqBlock = 1000

// seqSource hands out a channel's message sequence numbers: strictly
// increasing across restarts, so a message key is never reused (a Matrix
// homeserver would drop a reused transaction id as a duplicate). It
// durably reserves blocks of numbers and hands out only numbers of a block
// whose reservation is durable; after a crash it continues after the last
// reserved block.
//
// The reservation is an asynchronous write (no synced write from an
// actor's Receive, docs/architecture.md): the next block is reserved when
// half of the current one is used, so next waits for the disk only if a
// channel uses half a block faster than one commit, or on its first number.
type seqSource struct {
	rt        *runtime
	name      string
	mu        sync.Mutex
	landed    *sync.Cond // signalled when a reservation lands
	cur       uint64
	ceiling   uint64 // numbers up to it are reserved durably
	reserving bool   // a reservation is being written
}

func (s *seqSource) init(floor uint64) error {
	saved, err := s.rt.queues.cursor(s.name, "$seq")
	if err != nil {
		return err
	}
	s.landed = sync.NewCond(&s.mu)
	s.cur = max(floor, parseSeq(saved))
	s.ceiling = s.cur
	s.mu.Lock()
	s.reserve()
	s.mu.Unlock()
	return nil
}

// reserve starts writing the next block's reservation unless one is being
// written; s.mu is held.
func (s *seqSource) reserve() {
	if s.reserving {
		return
	}
	s.reserving = true
	ceiling := s.ceiling + seqBlock
	s.rt.queues.saveCursorAsync(s.name, "$seq", strconv.FormatUint(ceiling, 10), func(err error) {
		// Not inline: done may run in PutAsync itself, under s.mu.
		go s.reserved(ceiling, err)
	})
}

// reserved takes a reservation that landed. If it could not be written
// the numbers are still handed out: above every one handed out before in
// this run, as they always were.
func (s *seqSource) reserved(ceiling uint64, err error) {
	if err != nil {
		s.rt.log.Error().Err(err).Str("channel", s.name).Msg("reserving message sequence numbers failed")
	}
	s.mu.Lock()
	s.ceiling, s.reserving = ceiling, false
	s.landed.Broadcast()
	s.mu.Unlock()
}

// next returns the next number once it is durably reserved.
func (s *seqSource) next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur++
	for s.cur > s.ceiling {
		s.reserve()
		s.landed.Wait()
	}
	if s.ceiling-s.cur < seqBlock/2 {
		s.reserve()
	}
	return s.cur
}
