"""The fleet page's words, Vietnamese first."""

from __future__ import annotations

from agent.web.i18n import SIGN_IN

STRINGS: dict[str, dict[str, str]] = {
    **SIGN_IN,
    "title": {"vi": "Giám sát thiết bị số hóa", "en": "Scanning fleet"},
    "devices": {"vi": "thiết bị", "en": "devices"},
    "device": {"vi": "Thiết bị", "en": "Device"},
    "commune": {"vi": "Xã", "en": "Commune"},
    "district": {"vi": "Huyện", "en": "District"},
    "all_districts": {"vi": "Tất cả huyện", "en": "All districts"},
    "filter": {"vi": "Lọc", "en": "Filter"},
    "status": {"vi": "Trạng thái", "en": "Status"},
    "online": {"vi": "Trực tuyến", "en": "Online"},
    "offline": {"vi": "Mất kết nối", "en": "Offline"},
    "never_seen": {"vi": "Chưa từng báo", "en": "Never seen"},
    "backlog": {"vi": "Tồn (tài liệu)", "en": "Backlog (docs)"},
    "backlog_mb": {"vi": "Tồn (MB)", "en": "Backlog (MB)"},
    "oldest": {"vi": "Cũ nhất", "en": "Oldest"},
    "pages_today": {"vi": "Trang hôm nay", "en": "Pages today"},
    "scanner": {"vi": "Máy quét", "en": "Scanner"},
    "disk": {"vi": "Ổ đĩa trống", "en": "Disk free"},
    "certificate": {"vi": "Chứng thư hết hạn", "en": "Certificate expires"},
    "link": {"vi": "Đường truyền", "en": "Link"},
    "last_seen": {"vi": "Lần cuối", "en": "Last seen"},
    "alerts": {"vi": "Cảnh báo", "en": "Alerts"},
    "no_alerts": {"vi": "Không có cảnh báo", "en": "No alerts"},
    "attention": {"vi": "Cần xử lý", "en": "Needs attention"},
    "contact": {"vi": "Liên hệ", "en": "Contact"},
    "chart": {
        "vi": "30 ngày: tồn đọng và số trang mỗi ngày",
        "en": "30 days: backlog and pages per day",
    },
    "back": {"vi": "Quay lại danh sách", "en": "Back to the list"},
    "version": {"vi": "Phiên bản", "en": "Version"},
    "release": {"vi": "Cập nhật phần mềm", "en": "Software update"},
    "rel_offered": {"vi": "Đã gửi đề nghị", "en": "offered"},
    "rel_downloading": {"vi": "Đang tải", "en": "downloading"},
    "rel_installed": {"vi": "Đã cài, đang thử", "en": "installed, on trial"},
    "rel_healthy": {"vi": "Hoạt động tốt", "en": "healthy"},
    "rel_rolled_back": {"vi": "Đã quay lại bản cũ", "en": "rolled back"},
    "rel_refused": {"vi": "Bị từ chối", "en": "refused"},
    "ago": {"vi": "trước", "en": "ago"},
    "scanner_ready": {"vi": "Sẵn sàng", "en": "Ready"},
    "scanner_jam": {"vi": "Kẹt giấy", "en": "Paper jam"},
    "scanner_no_paper": {"vi": "Hết giấy", "en": "No paper"},
    "scanner_cover_open": {"vi": "Mở nắp", "en": "Cover open"},
    "scanner_absent": {"vi": "Không thấy máy quét", "en": "Absent"},
    "scanner_error": {"vi": "Lỗi", "en": "Error"},
    "scanner_unknown": {"vi": "Chưa rõ", "en": "Unknown"},
}


def strings(lang: str) -> dict[str, str]:
    return {key: texts.get(lang, texts["vi"]) for key, texts in STRINGS.items()}
