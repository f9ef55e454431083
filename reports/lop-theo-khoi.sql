-- Báo cáo theo yêu cầu viết bằng SQL: lớp học theo khối, số học sinh và sĩ số bình quân/lớp.
-- Chạy:  edustat report --year 2022-2023 --period dau_nam --form reports/lop-theo-khoi.sql
-- Câu lệnh đọc các bảng v_class (lớp, có số học sinh đang học n_learners và sĩ số tối đa
-- size_cap), v_school, v_learner, v_staff, v_room của kỳ báo cáo; có cột school_code nên
-- mỗi trường nhận một biểu của mình, Phòng nhận biểu toàn đơn vị.
-- title: Lớp học theo khối, số học sinh và sĩ số bình quân
-- label khoi: Khối
-- label so_lop: Số lớp
-- label so_hoc_sinh: Số học sinh đang học
-- label so_hoc_sinh_nu: Trong đó nữ
-- label si_so_binh_quan: Sĩ số bình quân (học sinh/lớp)
-- label si_so_lon_nhat: Sĩ số lớn nhất
-- label lop_vuot_si_so: Số lớp vượt sĩ số tối đa
-- label lop_ghep: Số lớp ghép
-- note: Sĩ số bình quân = số học sinh đang học / số lớp, làm tròn một chữ số thập phân. Sĩ số tối đa theo Điều lệ trường (Thông tư 28/2020, 32/2020; mầm non theo nhóm tuổi).
select
    school_code,
    school_name,
    grade_label                                           as khoi,
    count(*)                                              as so_lop,
    sum(n_learners)                                       as so_hoc_sinh,
    sum(n_female)                                         as so_hoc_sinh_nu,
    round(sum(n_learners) / count(*), 1)                  as si_so_binh_quan,
    max(n_learners)                                       as si_so_lon_nhat,
    count(*) filter (where n_learners > size_cap)         as lop_vuot_si_so,
    count(*) filter (where mixed > 0)                     as lop_ghep
from v_class
group by school_code, school_name, grade, grade_label
order by school_code, grade
