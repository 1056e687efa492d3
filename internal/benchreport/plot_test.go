package benchreport

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"testing"
)

func decodePNG(t *testing.T, data []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("decode plot: %v", err)
	}
	return img
}

func sameColor(a color.Color, b color.RGBA) bool {
	r, g, bl, al := a.RGBA()
	r2, g2, b2, a2 := b.RGBA()
	return r == r2 && g == g2 && bl == b2 && al == a2
}

// countColor counts the pixels of c inside r.
func countColor(img image.Image, r image.Rectangle, c color.RGBA) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if sameColor(img.At(x, y), c) {
				n++
			}
		}
	}
	return n
}

func TestPlotPNG(t *testing.T) {
	p := Plot{
		Title: "Test", XLabel: "agents", YLabel: "seconds", Width: 640, Height: 400,
		Series: []Series{
			{Name: "total", Color: ColorBlue, X: []float64{100, 1000, 5000}, Y: []float64{10, 9, 40}},
			{Name: "linear", Color: ColorGrey, X: []float64{0, 5000}, Y: []float64{0, 100}, Dashed: true},
		},
	}
	data, err := p.PNG()
	if err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, data)
	if got := img.Bounds(); got != image.Rect(0, 0, 640, 400) {
		t.Fatalf("bounds = %v, want 640×400", got)
	}
	area := p.Area()
	// Each point's marker is at its place: x 5000 is the right end of the
	// axis (5000 is a tick), y 40 is 40% up an axis to 100.
	for _, pt := range []struct{ x, y float64 }{{100, 10}, {1000, 9}, {5000, 40}} {
		X := area.Min.X + int(math.Round(pt.x/5000*float64(area.Dx())))
		Y := area.Max.Y - int(math.Round(pt.y/100*float64(area.Dy())))
		if !sameColor(img.At(X, Y), ColorBlue) {
			t.Errorf("no marker at (%v, %v) = pixel (%d, %d): %v", pt.x, pt.y, X, Y, img.At(X, Y))
		}
	}
	if n := countColor(img, area, ColorBlue); n < 200 {
		t.Errorf("%d blue pixels in the plot area, want a line and markers", n)
	}
	if n := countColor(img, area, ColorGrey); n < 100 {
		t.Errorf("%d grey pixels in the plot area, want the dashed line", n)
	}
	// Axes, ticks and labels are black, left of and below the plot area.
	if n := countColor(img, image.Rect(0, area.Min.Y, area.Min.X, area.Max.Y), colorBlack); n < 50 {
		t.Errorf("%d black pixels left of the plot area, want ticks and their values", n)
	}
	if n := countColor(img, image.Rect(area.Min.X, area.Max.Y+1, area.Max.X, 400), colorBlack); n < 50 {
		t.Errorf("%d black pixels below the plot area, want ticks and their values", n)
	}
	// The dashed line has gaps: some points along it are background.
	gaps := 0
	for x := area.Min.X + 5; x < area.Max.X-5; x++ {
		y := area.Max.Y - int(math.Round(float64(x-area.Min.X)/float64(area.Dx())*float64(area.Dy())))
		if !sameColor(img.At(x, y), ColorGrey) && !sameColor(img.At(x, y+1), ColorGrey) {
			gaps++
		}
	}
	if gaps == 0 {
		t.Error("the dashed line has no gaps")
	}
}

func TestPlotErrors(t *testing.T) {
	tests := []struct {
		name string
		p    Plot
		want error
	}{
		{"no series", Plot{}, ErrNoData},
		{"only NaN", Plot{Series: []Series{{X: []float64{math.NaN()}, Y: []float64{1}}}}, ErrNoData},
		{"mismatched", Plot{Series: []Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1}}}}, nil},
		{"too small", Plot{Width: 60, Height: 60, Series: []Series{{X: []float64{1}, Y: []float64{1}}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.p.PNG()
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestNiceStep(t *testing.T) {
	tests := []struct{ raw, want float64 }{
		{1000, 1000}, {1001, 2000}, {3, 5}, {0.07, 0.1}, {0.12, 0.2}, {0, 1},
	}
	for _, tt := range tests {
		if got := niceStep(tt.raw); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("niceStep(%v) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}

func TestDrawText(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 40, 10))
	drawText(img, 0, 0, "1a", colorBlack, 1)
	// "1" has its stem in column 2 on every row but the last two.
	if !sameColor(img.At(2, 0), colorBlack) || !sameColor(img.At(2, 5), colorBlack) {
		t.Error("glyph 1 not drawn")
	}
	// "a" is drawn as "A": its top row is 0b01110, at x 6..11.
	if !sameColor(img.At(7, 0), colorBlack) || sameColor(img.At(6, 0), colorBlack) {
		t.Error("lower-case a not drawn as A")
	}
	if got := textWidth("1a", 2); got != 22 {
		t.Errorf("textWidth = %d, want 22", got)
	}
}
