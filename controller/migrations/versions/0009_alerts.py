"""emergency broadcasts and drills: alerts, their templates, rendered sounds, saved stream sources

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 02:30:00

Adds users.may_alert (managers and admins may always alert; operators when granted) and
areas.alert_needs_confirm (a second person confirms a live alert there), and seeds the
prepared texts every area starts from (storm, flood, fire, epidemic, the correction).
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DEFAULT_TEMPLATES = (
    ("storm", "Bão mạnh sắp đổ bộ",
     "Thông báo khẩn cấp. Bão mạnh đang tiến vào đất liền, dự báo đổ bộ trong vài giờ tới, gió giật mạnh, "
     "mưa rất to. Đề nghị bà con chằng chống nhà cửa, không ra khỏi nhà khi không cần thiết, tàu thuyền "
     "vào nơi tránh trú an toàn, người ở nhà yếu và vùng trũng thấp di chuyển đến nơi sơ tán theo hướng dẫn "
     "của chính quyền."),
    ("storm", "Sơ tán khẩn cấp vì bão",
     "Lệnh sơ tán khẩn cấp. Đề nghị toàn bộ người dân ở vùng ven biển, ven sông và nhà không kiên cố khẩn "
     "trương di chuyển ngay đến điểm sơ tán. Mang theo giấy tờ, thuốc men, nước uống. Làm theo hướng dẫn "
     "của lực lượng chức năng."),
    ("flood", "Lũ lên nhanh",
     "Thông báo khẩn cấp. Nước lũ đang lên nhanh. Đề nghị bà con vùng trũng thấp di chuyển người, tài sản "
     "lên nơi cao, không qua sông suối, ngầm tràn, không đánh bắt cá hay vớt củi trên sông. Theo dõi thông "
     "báo tiếp theo của chính quyền."),
    ("fire", "Cháy lớn",
     "Thông báo khẩn cấp. Đang xảy ra cháy lớn. Đề nghị bà con khu vực gần đám cháy di chuyển ra xa, nhường "
     "đường cho xe chữa cháy, không tụ tập, gọi số 114 khi phát hiện đám cháy."),
    ("epidemic", "Dịch bệnh",
     "Thông báo khẩn cấp về dịch bệnh. Đề nghị bà con hạn chế tụ tập đông người, rửa tay thường xuyên, đến "
     "trạm y tế xã khi có triệu chứng sốt, ho, khó thở, và làm theo hướng dẫn của cơ quan y tế."),
    ("correction", "Thông báo đính chính",
     "Thông báo đính chính. Bản tin khẩn cấp vừa phát là nhầm lẫn. Xin bà con bỏ qua bản tin đó. Không có "
     "tình huống khẩn cấp nào. Xin lỗi bà con vì sự nhầm lẫn này."),
    ("all_clear", "Kết thúc tình trạng khẩn cấp",
     "Thông báo. Tình trạng khẩn cấp đã kết thúc. Bà con có thể trở lại sinh hoạt bình thường và tiếp tục "
     "theo dõi thông tin của chính quyền."),
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("may_alert", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("areas") as batch:
        batch.add_column(sa.Column("alert_needs_confirm", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("area_id", sa.String(120), sa.ForeignKey("areas.id"), nullable=False),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("target_rx", sa.Text()),
        sa.Column("content_kind", sa.String(12), nullable=False),
        sa.Column("bulletin_id", sa.Integer(), sa.ForeignKey("bulletins.id")),
        sa.Column("template_id", sa.Integer()),
        sa.Column("text", sa.Text()),
        sa.Column("stream_url", sa.String(1000)),
        sa.Column("volume", sa.Integer(), nullable=False),
        sa.Column("chime", sa.Boolean(), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("gap_s", sa.Float(), nullable=False),
        sa.Column("until_ms", sa.BigInteger()),
        sa.Column("media_sha256", sa.String(64), sa.ForeignKey("media.sha256")),
        sa.Column("duration_ms", sa.BigInteger()),
        sa.Column("tts_engine", sa.String(20)),
        sa.Column("corrects_id", sa.String(40)),
        sa.Column("replaces_id", sa.String(40)),
        sa.Column("nonces", sa.Text()),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("confirmed_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("confirmed_ms", sa.BigInteger()),
        sa.Column("started_ms", sa.BigInteger()),
        sa.Column("ends_ms", sa.BigInteger()),
        sa.Column("ended_ms", sa.BigInteger()),
        sa.Column("ended_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("end_reason", sa.String(40)),
        sa.Column("error_code", sa.String(60)),
        sa.Column("error_message", sa.Text()),
        sa.Column("error_message_vi", sa.Text()),
    )
    op.create_index("ix_alerts_status", "alerts", ["status"])
    op.create_index("ix_alerts_area_id", "alerts", ["area_id"])
    op.create_index("ix_alerts_created_ms", "alerts", ["created_ms"])
    op.create_index("ix_alerts_corrects_id", "alerts", ["corrects_id"])
    templates = op.create_table(
        "alert_templates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("area_id", sa.String(120), sa.ForeignKey("areas.id")),
        sa.Column("topic", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_alert_templates_area_id", "alert_templates", ["area_id"])
    op.create_table(
        "alert_sounds",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("media_sha256", sa.String(64), sa.ForeignKey("media.sha256"), nullable=False),
        sa.Column("tts_engine", sa.String(20)),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "stream_sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("area_id", sa.String(120), sa.ForeignKey("areas.id")),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("url", sa.String(1000), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_stream_sources_area_id", "stream_sources", ["area_id"])
    now = int(time.time() * 1000)
    op.bulk_insert(templates, [{"area_id": None, "topic": topic, "name": name, "text": text, "updated_ms": now}
                               for topic, name, text in DEFAULT_TEMPLATES])


def downgrade() -> None:
    op.drop_table("stream_sources")
    op.drop_table("alert_sounds")
    op.drop_table("alert_templates")
    op.drop_table("alerts")
    with op.batch_alter_table("areas") as batch:
        batch.drop_column("alert_needs_confirm")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("may_alert")
