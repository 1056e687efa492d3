package benchreport

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"strconv"
)

// Series is one line of a Plot.
type Series struct {
	// Name is shown in the legend.
	Name  string
	Color color.RGBA
	// X and Y are the points, in order of X; they have the same length.
	X, Y []float64
	// Dashed draws a dashed line without point markers (reference lines).
	Dashed bool
}

// Plot is a line chart with linear axes starting at zero.
type Plot struct {
	Title          string
	XLabel, YLabel string
	// Width and Height in pixels; 0 means 800×500.
	Width, Height int
	Series        []Series
}

// Colors for plot series, distinguishable in print and for the common
// forms of colour blindness (Okabe–Ito).
var (
	ColorBlue   = color.RGBA{0x00, 0x72, 0xB2, 0xFF}
	ColorOrange = color.RGBA{0xE6, 0x9F, 0x00, 0xFF}
	ColorGreen  = color.RGBA{0x00, 0x9E, 0x73, 0xFF}
	ColorGrey   = color.RGBA{0x80, 0x80, 0x80, 0xFF}

	colorWhite = color.RGBA{0xFF, 0xFF, 0xFF, 0xFF}
	colorBlack = color.RGBA{0x00, 0x00, 0x00, 0xFF}
	colorGrid  = color.RGBA{0xE4, 0xE4, 0xE4, 0xFF}
)

// ErrNoData is returned when a plot has no finite point to draw.
var ErrNoData = errors.New("plot has no data")

// Layout of the plot area inside the image, in pixels.
const (
	marginLeft   = 70
	marginRight  = 20
	marginTop    = 50
	marginBottom = 50
	tickLen      = 5
)

// Area returns the rectangle inside which the data are drawn.
func (p Plot) Area() image.Rectangle {
	w, h := p.size()
	return image.Rect(marginLeft, marginTop, w-marginRight, h-marginBottom)
}

func (p Plot) size() (int, int) {
	if p.Width == 0 || p.Height == 0 {
		return 800, 500
	}
	return p.Width, p.Height
}

// Render draws the plot: white background, grid, axes with ticks and
// their values, axis labels, title, series (solid lines with square
// markers, or dashed) and a legend.
func (p Plot) Render() (*image.RGBA, error) {
	w, h := p.size()
	area := p.Area()
	if area.Dx() < 50 || area.Dy() < 50 {
		return nil, fmt.Errorf("plot of %d×%d pixels is too small", w, h)
	}
	var xMax, yMax float64
	points := 0
	for _, s := range p.Series {
		if len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		for i := range s.X {
			if finite(s.X[i]) && finite(s.Y[i]) {
				xMax, yMax = math.Max(xMax, s.X[i]), math.Max(yMax, s.Y[i])
				points++
			}
		}
	}
	if points == 0 {
		return nil, ErrNoData
	}
	xStep, yStep := niceStep(xMax/5), niceStep(yMax/5)
	xMax, yMax = math.Ceil(xMax/xStep)*xStep, math.Ceil(yMax/yStep)*yStep
	px := func(x float64) int { return area.Min.X + int(math.Round(x/xMax*float64(area.Dx()))) }
	py := func(y float64) int { return area.Max.Y - int(math.Round(y/yMax*float64(area.Dy()))) }

	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fillRect(img, img.Rect, colorWhite)

	for x := 0.0; x <= xMax+xStep/2; x += xStep {
		X := px(x)
		line(img, X, area.Min.Y, X, area.Max.Y, colorGrid, 1, false)
		line(img, X, area.Max.Y, X, area.Max.Y+tickLen, colorBlack, 1, false)
		label := formatTick(x, xStep)
		drawText(img, X-textWidth(label, 1)/2, area.Max.Y+tickLen+4, label, colorBlack, 1)
	}
	for y := 0.0; y <= yMax+yStep/2; y += yStep {
		Y := py(y)
		line(img, area.Min.X, Y, area.Max.X, Y, colorGrid, 1, false)
		line(img, area.Min.X-tickLen, Y, area.Min.X, Y, colorBlack, 1, false)
		label := formatTick(y, yStep)
		drawText(img, area.Min.X-tickLen-4-textWidth(label, 1), Y-glyphH/2, label, colorBlack, 1)
	}
	line(img, area.Min.X, area.Max.Y, area.Max.X, area.Max.Y, colorBlack, 1, false)
	line(img, area.Min.X, area.Min.Y, area.Min.X, area.Max.Y, colorBlack, 1, false)

	drawText(img, (w-textWidth(p.Title, 2))/2, 10, p.Title, colorBlack, 2)
	drawText(img, area.Min.X+(area.Dx()-textWidth(p.XLabel, 1))/2, h-glyphH-10, p.XLabel, colorBlack, 1)
	drawText(img, 8, area.Min.Y-glyphH-10, p.YLabel, colorBlack, 1)

	// Reference (dashed) lines first, so that data are drawn over them.
	ordered := make([]Series, 0, len(p.Series))
	for _, dashed := range []bool{true, false} {
		for _, s := range p.Series {
			if s.Dashed == dashed {
				ordered = append(ordered, s)
			}
		}
	}
	for _, s := range ordered {
		prevX, prevY, have := 0, 0, false
		for i := range s.X {
			if !finite(s.X[i]) || !finite(s.Y[i]) {
				have = false
				continue
			}
			X, Y := px(s.X[i]), py(s.Y[i])
			if have {
				line(img, prevX, prevY, X, Y, s.Color, 2, s.Dashed)
			}
			if !s.Dashed {
				fillRect(img, image.Rect(X-3, Y-3, X+4, Y+4), s.Color)
			}
			prevX, prevY, have = X, Y, true
		}
	}

	// Legend, top left inside the plot area.
	lx, ly := area.Min.X+10, area.Min.Y+8
	for _, s := range p.Series {
		line(img, lx, ly+glyphH/2, lx+20, ly+glyphH/2, s.Color, 2, s.Dashed)
		drawText(img, lx+26, ly, s.Name, colorBlack, 1)
		ly += glyphH + 6
	}
	return img, nil
}

// PNG renders the plot and encodes it as PNG.
func (p Plot) PNG() ([]byte, error) {
	img, err := p.Render()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode plot: %w", err)
	}
	return buf.Bytes(), nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// niceStep returns the smallest of 1, 2 or 5 times a power of ten that is
// at least raw (a readable tick spacing).
func niceStep(raw float64) float64 {
	if raw <= 0 || !finite(raw) {
		return 1
	}
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*pow >= raw*(1-1e-9) {
			return m * pow
		}
	}
	return 10 * pow
}

// formatTick prints v with as many decimals as step needs.
func formatTick(v, step float64) string {
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step)))
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

func fillRect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// line draws from (x0, y0) to (x1, y1) with Bresenham's algorithm,
// width pixels wide; dashed lines alternate 6 pixels on, 4 off.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA, width int, dashed bool) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for n := 0; ; n++ {
		if !dashed || n%10 < 6 {
			for o := range width {
				if dx >= -dy {
					setPixel(img, x0, y0+o, c)
				} else {
					setPixel(img, x0+o, y0, c)
				}
			}
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}
