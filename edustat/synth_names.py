"""Vietnamese personal and school names for the synthetic city (data only, no logic).

Family-name shares follow the usual national estimates (Nguyễn ≈ 38 %, Trần ≈ 11 %, Lê ≈ 9.5 %,
Phạm ≈ 7 % …), tilted to the South (Huỳnh over Hoàng, Võ over Vũ) because the default city is
Thủ Dầu Một. Middle and given names are listed most-popular first; `synth.py` gives them
Zipf-like weights by rank, which is close enough to real name-frequency curves.
All strings are NFC with diacritics.
"""
from __future__ import annotations

# (family name, share in %). Shares need not sum to 100; they are normalised.
FAMILY_NAMES: tuple[tuple[str, float], ...] = (
    ("Nguyễn", 38.0), ("Trần", 11.0), ("Lê", 9.5), ("Phạm", 7.0), ("Huỳnh", 3.0),
    ("Phan", 4.5), ("Võ", 3.2), ("Hoàng", 1.5), ("Vũ", 1.2), ("Đặng", 2.1), ("Bùi", 2.0),
    ("Đỗ", 1.4), ("Hồ", 1.3), ("Ngô", 1.3), ("Dương", 1.0), ("Lý", 0.5), ("Trương", 0.8),
    ("Đinh", 0.6), ("Đoàn", 0.6), ("Lâm", 0.5), ("Mai", 0.5), ("Trịnh", 0.4), ("Lương", 0.4),
    ("Cao", 0.4), ("Đào", 0.4), ("Tô", 0.3), ("Hà", 0.3), ("Châu", 0.3), ("Tạ", 0.2),
    ("Lưu", 0.2), ("Thái", 0.2), ("Quách", 0.15), ("Vương", 0.15), ("Phùng", 0.15),
    ("Kiều", 0.1), ("Tăng", 0.1), ("Triệu", 0.1), ("La", 0.1), ("Từ", 0.1), ("Diệp", 0.1),
)

# Family names typical of some minority groups, by DM_DAN_TOC code; drawn uniformly.
ETHNIC_FAMILY_NAMES: dict[str, tuple[str, ...]] = {
    "02": ("Nông", "Hoàng", "Lương", "Ma", "Triệu", "Hà"),          # Tày
    "03": ("Lò", "Cầm", "Lường", "Quàng", "Hà", "Vi"),              # Thái
    "04": ("Lâm", "Trương", "Quách", "Lý", "Diệp", "Tăng", "Hứa", "Mạc", "Châu", "Huỳnh"),  # Hoa
    "05": ("Thạch", "Danh", "Sơn", "Kim", "Lâm", "Châu", "Huỳnh"),  # Khơ-me
    "06": ("Bùi", "Đinh", "Quách", "Hà", "Phạm"),                   # Mường
    "07": ("Nông", "Hoàng", "Lục", "Vi", "Lăng", "Triệu"),          # Nùng
}

MIDDLE_MALE: tuple[str, ...] = (
    "Văn", "Minh", "Gia", "Hoàng", "Quốc", "Đức", "Thành", "Anh", "Tuấn", "Hữu", "Công",
    "Nhật", "Bảo", "Thanh", "Đăng", "Trung", "Khánh", "Quang", "Duy", "Tấn", "Phúc", "Thiên",
    "Hải", "Trọng", "Chí", "Ngọc", "Xuân", "Tiến", "Thế", "Việt",
)
MIDDLE_FEMALE: tuple[str, ...] = (
    "Ngọc", "Thị", "Bảo", "Khánh", "Thanh", "Minh", "Gia", "Phương", "Hoàng", "Thu", "Kim",
    "Mỹ", "Quỳnh", "Diệu", "Tuệ", "Như", "Hải", "Thảo", "Yến", "Hồng", "Cẩm", "Tường", "Mai",
    "Lan", "Thùy", "Ánh", "Huyền", "Bích", "Xuân", "Hà",
)
# Among women born before 1990 "Thị" dominates; used instead of MIDDLE_FEMALE's weights.
THI_SHARE_ADULT = 0.55
THI_SHARE_CHILD = 0.12

GIVEN_MALE: tuple[str, ...] = (
    "Khang", "Huy", "Bảo", "Minh", "Phúc", "Anh", "Khoa", "Nam", "Long", "Quân", "Duy", "Đạt",
    "Hưng", "Hoàng", "Tuấn", "Trí", "Tài", "Thịnh", "Nhân", "Phát", "Lộc", "Kiệt", "Vinh",
    "Hiếu", "Thắng", "Khôi", "Đăng", "Thiện", "Tín", "Nguyên", "An", "Hào", "Kiên", "Phong",
    "Tâm", "Hậu", "Danh", "Triết", "Sơn", "Hải", "Dũng", "Tùng", "Hùng", "Lâm", "Trung",
    "Thành", "Quang", "Toàn", "Việt", "Vũ", "Hiển", "Lợi", "Nhật", "Thông", "Vĩnh",
)
GIVEN_FEMALE: tuple[str, ...] = (
    "Anh", "Vy", "Ngọc", "Nhi", "Hân", "Linh", "Trân", "My", "Thư", "Như", "Uyên", "Thảo",
    "Trang", "Khánh", "Quỳnh", "Tiên", "Ngân", "Hương", "Phương", "Giang", "Yến", "Châu",
    "Hà", "Vân", "Mai", "Lan", "Hoa", "Quyên", "Diệp", "Tâm", "Hạnh", "Ly", "Trinh", "Tú",
    "An", "Thủy", "Hằng", "Nga", "Nhung", "Oanh", "Xuân", "Bích", "Diễm", "Duyên", "Hiền",
    "Huyền", "Loan", "Nhàn", "Thanh", "Thùy",
)
# Staff were born 1962–2000: their given names are the older generation's.
GIVEN_MALE_ADULT: tuple[str, ...] = (
    "Hùng", "Dũng", "Tuấn", "Hải", "Sơn", "Thắng", "Minh", "Long", "Nam", "Hưng", "Trung",
    "Cường", "Phong", "Quang", "Thành", "Tâm", "Bình", "Hòa", "Phúc", "Lộc", "Tài", "Vinh",
    "Khoa", "Tùng", "Nghĩa", "Hiếu", "Toàn", "Đức", "Thanh", "Hoàng", "Tú", "Lâm", "Hậu",
    "Tân", "Thông", "Kiên", "Quý", "Trí", "Việt", "Huy",
)
GIVEN_FEMALE_ADULT: tuple[str, ...] = (
    "Hương", "Lan", "Hoa", "Thủy", "Hằng", "Nga", "Mai", "Dung", "Hà", "Liên", "Loan", "Hạnh",
    "Phượng", "Thu", "Tuyết", "Vân", "Nhung", "Hiền", "Oanh", "Trang", "Linh", "Yến", "Ngọc",
    "Huyền", "Thảo", "Hồng", "Phương", "Giang", "Trinh", "Thanh", "Duyên", "Diễm", "Xuân",
    "Bích", "Quyên", "Tâm", "Hiếu", "Uyên", "Nhàn", "Thoa",
)

# School names after the ward ("Trường Tiểu học Phú Cường") come first; when a ward already
# has a school of that level, these are used (as real cities do).
PERSON_SCHOOL_NAMES_TH: tuple[str, ...] = (
    "Nguyễn Du", "Lê Văn Tám", "Kim Đồng", "Trần Quốc Toản", "Võ Thị Sáu", "Nguyễn Trãi",
    "Lê Lợi", "Chu Văn An", "Nguyễn Bỉnh Khiêm", "Lê Quý Đôn", "Trần Hưng Đạo", "Ngô Quyền",
    "Lý Thường Kiệt", "Hùng Vương", "Trần Văn Ơn", "Nguyễn Hiền", "Phan Chu Trinh",
    "Nguyễn Văn Trỗi", "Đinh Bộ Lĩnh", "Lê Thị Hồng Gấm", "Hoàng Diệu", "Quang Trung",
    "Nguyễn Thái Học", "Bạch Đằng", "Lạc Hồng", "Tô Vĩnh Diện", "Võ Văn Tần", "Phù Đổng",
    "Nguyễn An Ninh", "Lê Hoàn",
)
PERSON_SCHOOL_NAMES_THCS: tuple[str, ...] = (
    "Nguyễn Văn Cừ", "Trần Phú", "Lê Hồng Phong", "Nguyễn Thị Minh Khai", "Nguyễn Viết Xuân",
    "Phan Bội Châu", "Võ Trường Toản", "Huỳnh Văn Nghệ", "Lương Thế Vinh", "Nguyễn Khuyến",
    "Tô Hiến Thành", "Đinh Tiên Hoàng", "Trần Đại Nghĩa", "Nguyễn Trường Tộ", "Lê Quý Đôn",
    "Nguyễn Huệ", "Phan Đình Phùng", "Huỳnh Thúc Kháng", "Hai Bà Trưng", "Trần Quang Khải",
    "Chu Văn An", "Nguyễn Đình Chiểu", "Phạm Ngũ Lão", "Lê Lai", "Tây Sơn", "Hòa Bình",
)
MN_SCHOOL_NAMES: tuple[str, ...] = (
    "Hoa Sen", "Hoa Mai", "Hoa Hồng", "Sơn Ca", "Họa Mi", "Vành Khuyên", "Tuổi Thơ",
    "Tuổi Ngọc", "Ánh Dương", "Hướng Dương", "Rạng Đông", "Bông Sen", "Hoa Cúc", "Sao Mai",
    "Bình Minh", "Thiên Thần Nhỏ", "Ngôi Sao", "Búp Sen Hồng", "Hoa Phượng", "Cánh Diều",
    "Hoa Lan", "Mầm Xanh", "Thỏ Ngọc", "Anh Đào", "Thủy Tiên", "Tuổi Hồng", "Măng Non",
    "Hoàng Yến", "Bé Ngoan", "Mặt Trời Nhỏ", "Hoa Trạng Nguyên", "Sen Hồng", "Ban Mai",
    "Cầu Vồng", "Tuổi Xanh", "Hoa Bằng Lăng", "Ong Vàng", "Chim Non", "Hạt Nắng", "Hoa Đào",
)
