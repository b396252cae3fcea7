#include "transport/internal/builtin_site.h"

#include <array>
#include <utility>

#include "base/rng.h"

namespace parley::transport::internal {
namespace {

// The choices, drawn from the seed with DeterministicRng (nothing here is secret).
class Draw {
 public:
  explicit Draw(std::uint64_t seed) : rng_(seed) {}
  std::size_t below(std::size_t n) { return rng_.uniform(static_cast<std::uint32_t>(n)); }
  template <class T, std::size_t N>
  const T& one_of(const std::array<T, N>& a) {
    return a[below(N)];
  }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  DeterministicRng rng_;
};

struct Section {
  std::string_view heading;
  std::string_view text;
};

struct Trade {
  std::string_view noun;   // in the business's name
  std::string_view place;  // what the premises are called
  std::array<std::string_view, 2> intro;
  std::array<Section, 3> sections;
  std::array<Section, 4> services;
  std::string_view about;
};

constexpr std::array<Trade, 4> kTrades = {{
    {"Bindery",
     "workshop",
     {"We are a small bookbinding workshop. We repair family bibles and cookbooks, rebind worn "
      "paperbacks in cloth, and make notebooks and guest books to order.",
      "Books come to us with loose pages, broken spines and water damage, and leave ready to be "
      "read again. We also bind theses, journals and small print runs."},
     {{{"Repairs",
        "Bring the book in and we will look at it with you. Most repairs take two to "
        "four weeks, and we give a written estimate before we start."},
       {"Classes",
        "Once a month we run a Saturday class on simple stitched bindings. Materials "
        "are included and places are limited to six."},
       {"Old books",
        "We never trim pages or discard original covers without asking, and we "
        "use reversible, archival materials throughout."}}},
     {{{"Book repair", "Loose pages, broken spines, torn hinges and water damage."},
       {"Rebinding",
        "Quarter cloth, full cloth or leather, with hand-sewn headbands and blind "
        "or gold titling."},
       {"Made to order",
        "Notebooks, sketchbooks, photo albums, guest books and boxes for "
        "letters."},
       {"Theses and journals",
        "Bound in cloth with the title on the spine, usually within "
        "the week."}}},
     "We trained in conservation binding and still do most of the work by hand, on a sewing "
     "frame and a standing press older than both of us."},
    {"Cycles",
     "shop",
     {"We repair, service and sell bicycles: town bikes, children's bikes, tandems and the old "
      "steel frames that deserve another life.",
      "A neighbourhood bicycle workshop. Bring in anything with pedals and we will tell you "
      "honestly what it needs and what it does not."},
     {{{"Servicing",
        "A standard service takes a day; in spring, book a week ahead. We call "
        "before doing anything that was not agreed."},
       {"Secondhand bikes",
        "We restore donated and part-exchanged bikes and sell them with "
        "three months of free adjustments."},
       {"Puncture while you wait",
        "Most punctures are fixed in twenty minutes if you come "
        "before four."}}},
     {{{"Service", "Gears and brakes adjusted, chain cleaned, wheels trued, bolts checked."},
       {"Repairs", "Wheels rebuilt, bearings replaced, frames straightened where it is safe."},
       {"Fitting", "Saddle, bars and pedals set up to suit you, with a short ride outside."},
       {"Parts", "Tyres, tubes, lights, locks and the small parts that are hard to find."}}},
     "Between us we have fixed bicycles for over thirty years, first from a shed and now from "
     "a shop with a proper bench and a kettle."},
    {"Piano Service",
     "studio",
     {"We tune, regulate and repair upright and grand pianos in homes, schools, churches and "
      "concert halls across the area.",
      "Piano tuning and repair by two technicians who also play. We look after instruments "
      "from beginners' uprights to concert grands."},
     {{{"Tuning",
        "Most pianos need tuning once or twice a year. A visit takes about ninety "
        "minutes, and we leave a note of anything we found."},
       {"Before you buy",
        "We will inspect a secondhand piano before you buy it and give you a "
        "plain report."},
       {"Moving house",
        "We can recommend careful movers and tune the piano once it has "
        "settled in its new room."}}},
     {{{"Tuning", "Pitch raising where needed, and a check of pedals and dampers."},
       {"Regulation", "The action adjusted so that every key responds evenly."},
       {"Repairs", "Broken strings, sticking keys, worn hammers and loose pins."},
       {"Restoration", "Refelting, restringing and refinishing, done at the studio."}}},
     "Both of us trained as piano technicians after years of playing, and we still enjoy the "
     "moment a tired instrument sounds like itself again."},
    {"Framing",
     "workshop",
     {"We frame pictures, prints, photographs, needlework and objects, and cut mounts by hand "
      "to suit each piece.",
      "A framing workshop for artists, collectors and anyone with something worth keeping on "
      "the wall."},
     {{{"Choosing a frame",
        "Bring the piece in and we will try mouldings and mounts against "
        "it with you. There is no charge for advice."},
       {"Conservation",
        "We use acid-free mounts and glass that filters light, so that what "
        "you frame does not fade."},
       {"Collection",
        "Most orders are ready within ten days. We will let you know when "
        "yours is."}}},
     {{{"Picture framing", "Wood and metal mouldings in many profiles and finishes."},
       {"Mount cutting", "Single, double and window mounts in a wide range of colours."},
       {"Box frames", "For medals, textiles, shoes and other objects with depth."},
       {"Hanging", "We can hang what we frame and advise on groups of pictures."}}},
     "The workshop began as a corner of a print studio, and framing slowly took over the whole "
     "room."},
}};

constexpr std::array<std::string_view, 20> kSurnames = {
    "Alder", "Finch", "Hale",   "Marsh", "Kettle", "Rowan", "Pike",  "Brook", "Tansy", "Ward",
    "Lowe",  "Fenn",  "Carver", "Moss",  "Sorrel", "Birch", "Quill", "Heron", "Ash",   "Thorne"};
constexpr std::array<std::string_view, 12> kPlaces = {
    "Mill Lane", "Riverside",     "Northgate", "Old Market", "Hillside", "Station Road",
    "Westbrook", "Church Street", "Kingsway",  "Eastfield",  "Harbour",  "Orchard"};
constexpr std::array<std::string_view, 16> kStreets = {
    "Mill", "Chapel", "Bridge", "Tanner", "Orchard", "Weaver", "Cooper", "Market",
    "Rope", "Brewer", "Meadow", "Glover", "Station", "Mason",  "Cross",  "Quarry"};
constexpr std::array<std::string_view, 6> kStreetKinds = {"Lane", "Street", "Road",
                                                          "Row",  "Yard",   "Walk"};
constexpr std::array<std::string_view, 5> kHours = {
    "Tuesday to Friday, 10:00&ndash;17:00, and Saturday mornings.",
    "Monday to Friday, 9:00&ndash;17:30. Closed at lunchtime on Wednesdays.",
    "Wednesday to Saturday, 10:00&ndash;18:00, and by appointment.",
    "Monday to Saturday, 9:30&ndash;16:30, except public holidays.",
    "Tuesday to Saturday, 10:00&ndash;16:00. Late opening on Thursdays until 19:00."};
constexpr std::array<std::string_view, 4> kHourHeadings = {"Opening hours", "When we are open",
                                                           "Hours", "Visiting us"};
constexpr std::array<std::string_view, 5> kFooterLines = {
    "Letters and parcels welcome", "Visits by appointment welcome", "Closed on public holidays",
    "Parking at the back", "Ring the bell at the side door"};
constexpr std::array<std::string_view, 4> kContactLines = {
    "Write to us or drop by during opening hours.",
    "The easiest way to reach us is to call in during opening hours.",
    "We are happy to talk about any job, large or small.",
    "If we are out on a job, leave a note and we will get back to you."};

struct Palette {
  std::string_view text, background, accent, rule, muted;
};
constexpr std::array<Palette, 6> kPalettes = {{
    {"#2b2622", "#faf7f2", "#7a4b2a", "#e2d9cc", "#857a6e"},
    {"#1f2a30", "#f6f8f9", "#2f6b7c", "#d5dee2", "#6c7a80"},
    {"#262b22", "#f7f9f3", "#4f6b2a", "#dbe2cf", "#75806a"},
    {"#2a2228", "#fbf7fa", "#7b3b5e", "#e6d8e1", "#85737e"},
    {"#222222", "#ffffff", "#a4332b", "#e5e5e5", "#777777"},
    {"#28241c", "#fffdf6", "#8a6a12", "#ece3c8", "#877c62"},
}};
constexpr std::array<std::string_view, 4> kFonts = {
    "Georgia,serif", "'Palatino Linotype',Palatino,serif", "Helvetica,Arial,sans-serif",
    "Verdana,Geneva,sans-serif"};

struct NavPage {
  std::string_view path, label;
};
constexpr std::array<NavPage, 4> kServicePages = {{{"/services.html", "Services"},
                                                   {"/what-we-do.html", "What we do"},
                                                   {"/prices.html", "Prices"},
                                                   {"/work.html", "Our work"}}};
constexpr std::array<NavPage, 3> kAboutPages = {
    {{"/about.html", "About"}, {"/about-us.html", "About us"}, {"/history.html", "History"}}};
constexpr std::array<NavPage, 3> kContactPages = {
    {{"/contact.html", "Contact"}, {"/visit.html", "Visit"}, {"/find-us.html", "Find us"}}};
constexpr std::array<std::string_view, 4> kStylePaths = {"/style.css", "/css/site.css", "/main.css",
                                                         "/assets/style.css"};

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '&') {
      out += "&amp;";
    } else if (c == '<') {
      out += "&lt;";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string business_name(Draw& d, const Trade& t) {
  const std::size_t ia = d.below(kSurnames.size());
  std::size_t ib = d.below(kSurnames.size() - 1);
  if (ib >= ia) ++ib;  // two different names
  const std::string_view a = kSurnames[ia];
  const std::string_view b = kSurnames[ib];
  switch (d.below(4)) {
    case 0:
      return std::string(a) + " & " + std::string(b) + " " + std::string(t.noun);
    case 1:
      return std::string(d.one_of(kPlaces)) + " " + std::string(t.noun);
    case 2:
      return std::string(a) + "'s " + std::string(t.noun);
    default:
      return "The " + std::string(d.one_of(kPlaces)) + " " + std::string(t.noun);
  }
}

std::string stylesheet(Draw& d) {
  const Palette& p = d.one_of(kPalettes);
  const std::string_view font = d.one_of(kFonts);
  const std::string size = std::to_string(16 + d.below(3));
  const std::string width = std::to_string(40 + 2 * d.below(5));
  const std::string text(p.text), rule(p.rule);
  return "body{margin:0;font:" + size + "px/1.6 " + std::string(font) + ";color:" + text +
         ";background:" + std::string(p.background) + "}\n" +
         "header,main,footer{max-width:" + width + "rem;margin:0 auto;padding:0 1.2rem}\n" +
         "header{padding-top:2rem;border-bottom:1px solid " + rule + "}\n" +
         "header a{color:" + text + ";text-decoration:none}\n" +
         "nav a{margin-right:1.1rem;color:" + std::string(p.accent) + "}\n" +
         "h1{font-weight:normal;letter-spacing:.02em}\n" +
         "h2{font-weight:normal;margin-top:2rem}\n" +
         "footer{margin-top:3rem;padding-bottom:2rem;font-size:14px;color:" + std::string(p.muted) +
         ";border-top:1px solid " + rule + "}\n";
}

// What every page shares: the head, the header with its navigation, and the footer.
struct Frame {
  std::string name;  // escaped
  std::string style_path;
  std::string nav;
  std::string footer;

  std::string page(std::string_view title, std::string_view main) const {
    const std::string full_title = title.empty() ? name : std::string(title) + " &ndash; " + name;
    return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
           full_title + "</title>\n<link rel=\"stylesheet\" href=\"" + style_path +
           "\">\n</head>\n<body>\n<header>\n<h1><a href=\"/\">" + name + "</a></h1>\n" + nav +
           "</header>\n<main>\n" + std::string(main) + "</main>\n<footer>\n<p>" + footer +
           "</p>\n</footer>\n</body>\n</html>\n";
  }
};

std::string paragraph(std::string_view text) { return "<p>" + std::string(text) + "</p>\n"; }
std::string section(std::string_view heading, std::string_view text) {
  return "<h2>" + std::string(heading) + "</h2>\n" + paragraph(text);
}

}  // namespace

BuiltinSite make_builtin_site(std::uint64_t seed) {
  Draw d(seed);
  const Trade& trade = d.one_of(kTrades);
  Frame f;
  f.name = html_escape(business_name(d, trade));
  f.style_path = std::string(d.one_of(kStylePaths));
  const NavPage& services = d.one_of(kServicePages);
  const NavPage& about = d.one_of(kAboutPages);
  const NavPage* contact = d.below(2) == 0 ? &d.one_of(kContactPages) : nullptr;
  auto link = [](const NavPage& to) {
    return "<a href=\"" + std::string(to.path) + "\">" + std::string(to.label) + "</a>";
  };
  f.nav = "<nav>" + link({"/", "Home"}) + link(services) + link(about) +
          (contact != nullptr ? link(*contact) : "") + "</nav>\n";
  const std::string address = std::to_string(1 + d.below(98)) + " " +
                              std::string(d.one_of(kStreets)) + " " +
                              std::string(d.one_of(kStreetKinds));
  f.footer = f.name + " &middot; " + address + " &middot; " + std::string(d.one_of(kFooterLines));
  const std::string_view hours = d.one_of(kHours);
  const std::string_view hours_heading = d.one_of(kHourHeadings);
  const std::string_view contact_line = d.one_of(kContactLines);
  const std::size_t year = 1988 + d.below(29);

  std::string home = paragraph(trade.intro[d.below(2)]);
  std::vector<std::size_t> order = {0, 1, 2};
  d.shuffle(order);
  const std::size_t hours_at = d.below(3);
  for (std::size_t i = 0; i < 2; ++i) {
    if (i == hours_at) home += section(hours_heading, hours);
    home += section(trade.sections[order[i]].heading, trade.sections[order[i]].text);
  }
  if (hours_at == 2) home += section(hours_heading, hours);

  std::vector<std::size_t> offered = {0, 1, 2, 3};
  d.shuffle(offered);
  offered.resize(3 + d.below(2));
  std::string work;
  for (std::size_t i : offered) work += section(trade.services[i].heading, trade.services[i].text);
  work += paragraph("Every job is different, so we quote once we have seen it.");

  std::string story = paragraph("The " + std::string(trade.place) + " opened in " +
                                std::to_string(year) + ". " + std::string(trade.about));
  if (contact == nullptr) story += paragraph(contact_line);
  const std::string robots =
      d.below(2) == 0 ? "User-agent: *\nDisallow:\n" : "User-agent: *\nAllow: /\n";

  BuiltinSite site;
  // 2021-01-01 plus up to four years: when the pages were last changed.
  site.modified_s = 1609459200 + static_cast<std::int64_t>(d.below(4 * 365 * 86400));
  const std::string index = f.page("", home);
  const std::string html = "text/html; charset=utf-8";
  site.pages.push_back({"/", html, index});
  site.pages.push_back({"/index.html", html, index});
  site.pages.push_back({std::string(services.path), html, f.page(services.label, work)});
  site.pages.push_back({std::string(about.path), html, f.page(about.label, story)});
  if (contact != nullptr) {
    site.pages.push_back(
        {std::string(contact->path), html,
         f.page(contact->label,
                section(hours_heading, hours) + paragraph(address) + paragraph(contact_line))});
  }
  site.pages.push_back({f.style_path, "text/css", stylesheet(d)});
  site.pages.push_back({"/robots.txt", "text/plain", robots});
  site.not_found =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Page not "
      "found</title>\n<link rel=\"stylesheet\" href=\"" +
      f.style_path +
      "\">\n</head>\n<body>\n<main>\n<h1>Page not found</h1>\n<p>Sorry, there is nothing at "
      "this address. You could try the <a href=\"/\">home page</a>.</p>\n</main>\n</body>\n"
      "</html>\n";
  return site;
}

}  // namespace parley::transport::internal
