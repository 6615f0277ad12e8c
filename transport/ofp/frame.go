// Package ofp is the OFP wire protocol LibreFang nodes speak to each other:
// length-prefixed JSON frames, HMAC-authenticated once a handshake has
// agreed a session key, the message envelope, and the handshake's
// cryptographic recipe (docs/ofp.md; LibreFang's crates/librefang-wire).
// It holds no state and starts nothing: peer links are the business of
// the actors that use it.
package ofp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// Limits, LibreFang's.
const (
	// MaxFrame bounds a frame after the handshake (length prefix value).
	MaxFrame = 16 << 20
	// MaxHandshakeFrame bounds a frame before the handshake, so a
	// stranger cannot make a node buffer 16 MiB per connection.
	MaxHandshakeFrame = 64 << 10
	// HandshakeTimeout is how long a handshake frame may take to arrive.
	HandshakeTimeout = 10 * time.Second
	// MACHexLen is the length of the hex HMAC-SHA256 that ends an
	// authenticated frame.
	MACHexLen = 64
	// minAuthFrame: at least "{}" and the MAC.
	minAuthFrame = 2 + MACHexLen
)

// Frame errors. Each one ends the connection.
var (
	ErrFrameTooLarge = errors.New("ofp: frame larger than allowed")
	ErrFrameTooShort = errors.New("ofp: authenticated frame shorter than its MAC")
	ErrBadMAC        = errors.New("ofp: frame MAC does not verify")
)

// WriteFrame writes one unauthenticated (handshake) frame: the 4-byte
// big-endian length, then payload. One Write, so concurrent writers to a
// connection must still serialise, but a frame is never split by us.
func WriteFrame(w io.Writer, payload []byte) error {
	if len(payload) > MaxFrame {
		return ErrFrameTooLarge
	}
	buf := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[4:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one unauthenticated frame of at most max bytes. The
// length is checked before anything is allocated.
func ReadFrame(r io.Reader, max uint32) ([]byte, error) {
	n, err := readLength(r, max)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

func readLength(r io.Reader, max uint32) (uint32, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > max {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrFrameTooLarge, n, max)
	}
	return n, nil
}

// MAC is the hex HMAC-SHA256 of payload under the session key. The key
// is the session key's hex text, used as bytes (LibreFang's choice).
func MAC(sessionKey string, payload []byte) string {
	m := hmac.New(sha256.New, []byte(sessionKey))
	m.Write(payload)
	return hex.EncodeToString(m.Sum(nil))
}

// WriteAuthFrame writes one authenticated frame: length = len(payload)+64,
// payload, then its MAC as 64 lowercase hex characters.
func WriteAuthFrame(w io.Writer, payload []byte, sessionKey string) error {
	if len(payload)+MACHexLen > MaxFrame {
		return ErrFrameTooLarge
	}
	buf := make([]byte, 4, 4+len(payload)+MACHexLen)
	binary.BigEndian.PutUint32(buf, uint32(len(payload)+MACHexLen))
	buf = append(buf, payload...)
	buf = append(buf, MAC(sessionKey, payload)...)
	_, err := w.Write(buf)
	return err
}

// ReadAuthFrame reads one authenticated frame and returns its payload
// once the MAC verifies (compared in constant time).
func ReadAuthFrame(r io.Reader, sessionKey string) ([]byte, error) {
	n, err := readLength(r, MaxFrame)
	if err != nil {
		return nil, err
	}
	if n < minAuthFrame {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooShort, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	payload, got := buf[:n-MACHexLen], buf[n-MACHexLen:]
	if !hmac.Equal(got, []byte(MAC(sessionKey, payload))) {
		return nil, ErrBadMAC
	}
	return payload, nil
}
