package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	// SignatureHeader carries "t=<unix seconds>,v1=<hex hmac>[,v1=...]".
	SignatureHeader = "Ferry-Signature"
	// EventIDHeader repeats Event.EventID, so a receiver can drop a
	// repeated delivery before parsing the body.
	EventIDHeader = "Ferry-Event-Id"
)

// DefaultTolerance is the replay window: how far the signature's timestamp
// may be from the receiver's clock. Each delivery attempt is signed anew, so
// a retried delivery is never older than this when it is sent.
const DefaultTolerance = 5 * time.Minute

// MinSecretLength is the shortest signing secret a worker accepts, in bytes.
const MinSecretLength = 16

// Errors of Verify, matched with errors.Is. Their messages never contain a
// secret or a signature.
var (
	// ErrNoSignature: the header is missing or has no t and v1.
	ErrNoSignature = errors.New("no valid Ferry-Signature header (want t=<unix>,v1=<hex>)")
	// ErrSignatureMismatch: no v1 matches the body under any of the secrets.
	ErrSignatureMismatch = errors.New("signature does not match the body: wrong secret, or the body was changed")
	// ErrTimestamp: t is outside the tolerance: a replayed (old) request, or
	// a clock far off.
	ErrTimestamp = errors.New("signature timestamp is outside the replay window")
)

// Sign returns the Ferry-Signature header value for body, sent at t, with
// one v1 per secret.
func Sign(body []byte, t time.Time, secrets ...[]byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	var b strings.Builder
	b.WriteString("t=" + ts)
	for _, s := range secrets {
		b.WriteString(",v1=" + hex.EncodeToString(mac(s, ts, body)))
	}
	return b.String()
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks header (the Ferry-Signature value) against body and the
// receiver's secrets: some v1 must be the HMAC of t + "." + body under some
// secret, and t must be within tolerance of now (zero tolerance means
// DefaultTolerance). The signature is checked before the time, so a forged
// request learns nothing about the window.
func Verify(body []byte, header string, now time.Time, tolerance time.Duration, secrets ...[]byte) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil && len(b) == sha256.Size {
				sigs = append(sigs, b)
			}
		}
	}
	sent, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	matched := false
	for _, s := range secrets {
		want := mac(s, ts, body)
		for _, got := range sigs {
			// hmac.Equal runs in constant time.
			if hmac.Equal(want, got) {
				matched = true
			}
		}
	}
	if !matched {
		return ErrSignatureMismatch
	}
	if age := now.Sub(time.Unix(sent, 0)); age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: signed at %s, %s from now, more than %s: %w",
			ErrTimestamp, time.Unix(sent, 0).UTC().Format(time.RFC3339), age.Round(time.Second), tolerance, errReplay(age))
	}
	return nil
}

// errReplay says which way the clock is off.
func errReplay(age time.Duration) error {
	if age > 0 {
		return errors.New("an old request (a replay?) or a receiver clock running ahead")
	}
	return errors.New("a request from the future: check the clocks")
}

// MaxBodySize bounds the body VerifyRequest reads: events are small.
const MaxBodySize = 1 << 20

// VerifyRequest reads r's body (at most MaxBodySize), verifies its
// Ferry-Signature with Verify at the current time and DefaultTolerance, and
// decodes the Event. The caller answers 2xx once it has stored the event;
// anything else makes the worker retry.
func VerifyRequest(r *http.Request, secrets ...[]byte) (Event, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodySize+1))
	if err != nil {
		return Event{}, fmt.Errorf("read webhook body: %w", err)
	}
	if len(body) > MaxBodySize {
		return Event{}, fmt.Errorf("webhook body is larger than %d bytes", MaxBodySize)
	}
	if err := Verify(body, r.Header.Get(SignatureHeader), time.Now(), 0, secrets...); err != nil {
		return Event{}, err
	}
	return ParseEvent(body)
}
