package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// sizeUnits maps a unit, lower-cased, to its multiplier: IEC units (KiB) and
// single letters (K, as rclone reads them) are powers of 1024, SI units (KB)
// powers of 1000.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "ki": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mi": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gi": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "ti": 1 << 40, "tb": 1e12,
}

// parseSize parses "1048576", "16MiB", "16M", "5GB", "1.5 GiB".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	mult, ok := sizeUnits[unit]
	v, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || num == "" || v < 0 {
		return 0, usageErrorf("invalid size %q: use bytes (1048576) or a number with a unit: KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000), e.g. 16MiB", s)
	}
	b := v * mult
	if b > math.MaxInt64/2 || b != math.Trunc(b) {
		return 0, usageErrorf("invalid size %q: it must be a whole number of bytes below 4 EiB", s)
	}
	return int64(b), nil
}

// parseDuration is time.ParseDuration with an actionable message.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, usageErrorf("invalid duration %q: use a number with a unit, e.g. 90s, 15m, 1h30m", s)
	}
	return d, nil
}

// parseInterval parses the period of something that can be switched off
// (the janitor): a duration such as "1h", or "off" — and, as older docs
// promised, any negative duration — for off, returned as -1.
func parseInterval(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "off") {
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usageErrorf("invalid interval %q: use a duration such as 30m or 1h, or off to disable it", s)
	}
	return max(d, -1), nil
}

// formatBytes prints n in IEC units: "1.5 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// eta is the time left at rate bytes per second; 0 when unknown.
func eta(done, total int64, rate float64) time.Duration {
	if total <= 0 || rate <= 0 || done >= total {
		return 0
	}
	return time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
}

// size, duration and interval are the units settings are written in, in
// the config file and on the command line alike: each is a yaml.Unmarshaler
// and a pflag.Value, over the int64 or time.Duration of the setting it
// points at, e.g. (*size)(&cfg.PartSize).

// size is a number of bytes: "16MiB", "5GB", "1048576" (see parseSize).
type size int64

func (s *size) UnmarshalYAML(n *yaml.Node) error { return unmarshalUnit(n, s.Set) }

func (s *size) String() string {
	if s == nil || *s == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*s), 10)
}

func (s *size) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = size(n)
	return nil
}

func (*size) Type() string { return "size" }

// duration is "90s", "15m", "1h30m" (see parseDuration).
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error { return unmarshalUnit(n, d.Set) }

func (d *duration) String() string {
	if d == nil || *d == 0 {
		return ""
	}
	return time.Duration(*d).String()
}

func (d *duration) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (*duration) Type() string { return "duration" }

// interval is a duration that can be switched off: "1h", or "off" (or any
// negative duration, as older docs said), which is -1 (see parseInterval).
type interval time.Duration

func (d *interval) UnmarshalYAML(n *yaml.Node) error { return unmarshalUnit(n, d.Set) }

func (d *interval) String() string {
	switch {
	case d == nil || *d == 0:
		return ""
	case *d < 0:
		return "off"
	}
	return time.Duration(*d).String()
}

func (d *interval) Set(s string) error {
	v, err := parseInterval(s)
	if err != nil {
		return err
	}
	*d = interval(v)
	return nil
}

func (*interval) Type() string { return "duration|off" }

// unmarshalUnit sets a unit from a YAML scalar, the line in its errors.
func unmarshalUnit(n *yaml.Node, set func(string) error) error {
	if err := set(n.Value); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}
